// SMPP SMSC simulator for the Boxless interop suite (npm `smpp` in server mode).
// Usage: node smsc.js PORT OUT.jsonl   (listens on 127.0.0.1 only)
// Every accepted submit_sm is appended to OUT.jsonl as one JSON line (with its message_id
// and, for a part of a long text, its UDH or sar_* fields); every delivery receipt sent to
// OUT.receipts.jsonl.
// SMSC_MODE=refuse answers ESME_RSYSERR, SMSC_MODE=throttle ESME_RTHROTTLED.
//
// Delivery receipts (for submit_sm with registered_delivery = 1): SMSC_RECEIPTS is a JSON
// object from destination (digits) or "default" to a rule:
//   "delivered:MS"  DELIVRD after MS ms         "undeliv:MS"   UNDELIV (err:001)
//   "expired:MS"    EXPIRED                     "none"         no receipt at all
//   "early"         DELIVRD sent before the submit_sm_resp, which follows 300 ms later
//   "twice:MS"      DELIVRD, then the same receipt again 200 ms later
//   "text:MS"       DELIVRD without TLVs, the id in decimal in the text only
//   "elsewhere:MS"  DELIVRD after MS ms on another bound session than the one that
//                   submitted (SMSCs may use any bind of the account)
//   "early-elsewhere" DELIVRD on another bound session before the submit_sm_resp,
//                   which follows 300 ms later
//   "landline"      submit_sm refused with ESME_RINVDSTADR (a number that takes no SMS),
//                   logged to OUT.jsonl with "refused": true
// Default: {"default": "none"}. A receipt goes on the session that submitted while it is
// bound, else on the latest bound session; one not acknowledged (the ESME died) is sent
// again on the next bind, as SMSCs do.
//
// Texts from phones (MO): each line appended to OUT.mo.jsonl, {"from": "15551230009",
// "text": "STOP"}, is delivered as a deliver_sm on the latest bound session (until one
// answers ESME_ROK); the answers go to OUT.mo-resp.jsonl.
'use strict';
const smpp = require('smpp');
const fs = require('fs');

const port = Number(process.argv[2] || 2775);
const out = process.argv[3] || 'sms.jsonl';
const receiptsOut = out.replace(/\.jsonl$/, '') + '.receipts.jsonl';
const moIn = out.replace(/\.jsonl$/, '') + '.mo.jsonl';
const moOut = out.replace(/\.jsonl$/, '') + '.mo-resp.jsonl';
let moSeen = 0;
const mode = process.env.SMSC_MODE || 'accept';
const rules = JSON.parse(process.env.SMSC_RECEIPTS || '{"default": "none"}');
let n = 0;
const bound = new Set();
let latest = null;
const queue = [];   // receipts waiting for a bound session

function rule(dest) {
  const r = rules[dest] || rules.default || 'none';
  const [kind, ms] = r.split(':');
  return { kind, ms: Number(ms || 0) };
}

function stamp(d) {
  const p = (x) => String(x).padStart(2, '0');
  return `${p(d.getUTCFullYear() % 100)}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}`;
}

function receiptPdu(r) {
  const idText = r.textOnly ? String(parseInt(r.id, 16)) : r.id;
  const text = `id:${idText} sub:001 dlvrd:${r.stat === 'DELIVRD' ? '001' : '000'} ` +
    `submit date:${stamp(r.submitted)} done date:${stamp(new Date())} stat:${r.stat} ` +
    `err:${r.stat === 'DELIVRD' ? '000' : '001'} text:`;
  const pdu = {
    source_addr: r.dest, source_addr_ton: 1, source_addr_npi: 1,
    destination_addr: r.source, dest_addr_ton: 1, dest_addr_npi: 1,
    esm_class: smpp.ESM_CLASS.MC_DELIVERY_RECEIPT, short_message: text,
  };
  if (!r.textOnly) {
    pdu.receipted_message_id = r.id;
    pdu.message_state = { DELIVRD: 2, EXPIRED: 3, UNDELIV: 5 }[r.stat];
  }
  return pdu;
}

function send(r) {
  let s = r.session && bound.has(r.session) ? r.session : latest;
  if (r.elsewhere) s = [...bound].find((b) => b !== r.session) || s;
  if (!s || !bound.has(s)) { queue.push(r); return; }
  let answered = false;
  const sent = Date.now();
  s.deliver_sm(receiptPdu(r), (resp) => {
    answered = true;
    fs.appendFileSync(receiptsOut, JSON.stringify({
      id: r.id, stat: r.stat, destination: r.dest, status: resp.command_status, sent, t: Date.now(),
      on_submitter: s === r.session,
    }) + '\n');
    if (resp.command_status !== 0) setTimeout(() => send(r), 1000);
  });
  // No answer: the ESME went away with it; send it again on the next bind.
  setTimeout(() => { if (!answered) { r.session = null; send(r); } }, 5000);
}

function flushQueue() {
  while (queue.length && latest) send(queue.shift());
}

function sendMo(m) {
  if (!latest) { setTimeout(() => sendMo(m), 500); return; }
  latest.deliver_sm({
    source_addr: m.from, source_addr_ton: 1, source_addr_npi: 1,
    destination_addr: m.to || '18005550000', dest_addr_ton: 1, dest_addr_npi: 1,
    esm_class: 0, short_message: m.text,
  }, (resp) => {
    fs.appendFileSync(moOut, JSON.stringify({ ...m, status: resp.command_status, t: Date.now() }) + '\n');
    if (resp.command_status !== 0) setTimeout(() => sendMo(m), 1000);
  });
}

setInterval(() => {
  let lines = [];
  try { lines = fs.readFileSync(moIn, 'utf8').split('\n').filter((l) => l.trim()); } catch (e) { return; }
  for (; moSeen < lines.length; moSeen += 1) sendMo(JSON.parse(lines[moSeen]));
}, 200);

const server = smpp.createServer({ debug: false }, (session) => {
  session.on('error', () => {});
  const bind = (pdu) => {
    session.send(pdu.response());
    bound.add(session);
    latest = session;
    flushQueue();
  };
  session.on('bind_transceiver', bind);
  session.on('bind_transmitter', (pdu) => session.send(pdu.response()));
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => { session.send(pdu.response()); session.close(); });
  session.on('close', () => {
    bound.delete(session);
    if (latest === session) latest = [...bound].pop() || null;
  });
  session.on('submit_sm', (pdu) => {
    if (mode === 'refuse') return session.send(pdu.response({ command_status: smpp.ESME_RSYSERR }));
    if (mode === 'throttle') return session.send(pdu.response({ command_status: smpp.ESME_RTHROTTLED }));
    const sm = pdu.short_message;
    const text = typeof sm === 'object' && sm !== null ? String(sm.message) : String(sm);
    const udh = typeof sm === 'object' && sm !== null && sm.udh ? sm.udh.map((u) => Array.from(u)) : null;
    const r = rule(pdu.destination_addr);
    if (r.kind === 'landline') {
      fs.appendFileSync(out, JSON.stringify({
        destination: pdu.destination_addr, text, refused: true, t: Date.now(),
      }) + '\n');
      return session.send(pdu.response({ command_status: smpp.ESME_RINVDSTADR }));
    }
    n += 1;
    const id = (0xa000 + n).toString(16);
    fs.appendFileSync(out, JSON.stringify({
      source: pdu.source_addr, source_ton: pdu.source_addr_ton,
      destination: pdu.destination_addr, dest_ton: pdu.dest_addr_ton,
      data_coding: pdu.data_coding, esm_class: pdu.esm_class, udh,
      sar: pdu.sar_msg_ref_num !== undefined
        ? [pdu.sar_msg_ref_num, pdu.sar_total_segments, pdu.sar_segment_seqnum] : null,
      registered_delivery: pdu.registered_delivery, message_id: id, text, t: Date.now(),
    }) + '\n');
    const receipt = {
      id, dest: pdu.destination_addr, source: pdu.source_addr, session, submitted: new Date(),
      stat: { undeliv: 'UNDELIV', expired: 'EXPIRED' }[r.kind] || 'DELIVRD',
      textOnly: r.kind === 'text',
      elsewhere: r.kind === 'elsewhere' || r.kind === 'early-elsewhere',
    };
    const wants = (pdu.registered_delivery & 0x03) !== 0 && r.kind !== 'none';
    if (wants && (r.kind === 'early' || r.kind === 'early-elsewhere')) {
      send(receipt);
      setTimeout(() => session.send(pdu.response({ message_id: id })), 300);
      return;
    }
    session.send(pdu.response({ message_id: id }));
    if (!wants) return;
    setTimeout(() => send(receipt), r.ms);
    if (r.kind === 'twice') setTimeout(() => send({ ...receipt }), r.ms + 200);
  });
});
server.listen(port, '127.0.0.1', () => console.log(`smsc simulator on 127.0.0.1:${port} mode=${mode}`));
process.on('SIGTERM', () => process.exit(0));
