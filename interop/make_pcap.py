#!/usr/bin/env python3
"""Writes a pcap of RTP/PCMU packets (20 ms each) from an 8 kHz mono 16-bit WAV, for SIPp's
play_pcap_audio; or, when OUT ends in .ulaw, the raw µ-law octets for SIPp's rtp_stream.
Usage: make_pcap.py IN.wav OUT.pcap|OUT.ulaw"""
import struct
import sys
import wave


def ulaw(sample: int) -> int:
    """ITU-T G.711 mu-law encoding of one 16-bit sample."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    if sample < 0:
        sample = -sample
    sample = min(sample, clip) + bias
    exponent, mask = 7, 0x4000
    while exponent > 0 and not sample & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    with wave.open(src, "rb") as w:
        if w.getframerate() != 8000 or w.getnchannels() != 1 or w.getsampwidth() != 2:
            sys.exit(f"{src}: need 8 kHz mono 16-bit PCM")
        frames = w.readframes(w.getnframes())
    samples = struct.unpack("<%dh" % (len(frames) // 2), frames)
    if dst.endswith(".ulaw"):
        with open(dst, "wb") as f:
            f.write(bytes(ulaw(s) for s in samples))
        return
    with open(dst, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        seq, ts, ssrc = 1000, 8000, 0x5EED1234
        for i in range(0, len(samples), 160):
            chunk = list(samples[i:i + 160]) + [0] * max(0, 160 - len(samples[i:i + 160]))
            rtp = struct.pack("!BBHII", 0x80, 0x80 if i == 0 else 0, seq & 0xFFFF, ts, ssrc)
            rtp += bytes(ulaw(s) for s in chunk)
            udp_len = 8 + len(rtp)
            udp = struct.pack("!HHHH", 6000, 6002, udp_len, 0) + rtp
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, seq & 0xFFFF, 0, 64, 17, 0,
                             bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
            ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
            eth = b"\0" * 12 + b"\x08\x00"
            pkt = eth + ip + udp
            t = (i // 160) * 20_000
            f.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(pkt), len(pkt)))
            f.write(pkt)
            seq += 1
            ts += 160


if __name__ == "__main__":
    main()
