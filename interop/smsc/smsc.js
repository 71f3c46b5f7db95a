// SMPP SMSC simulator for the Boxless interop suite (npm `smpp` in server mode).
// Usage: node smsc.js PORT OUT.jsonl   (listens on 127.0.0.1 only)
// Every accepted submit_sm is appended to OUT.jsonl as one JSON line.
// SMSC_MODE=refuse answers ESME_RSYSERR, SMSC_MODE=throttle ESME_RTHROTTLED.
'use strict';
const smpp = require('smpp');
const fs = require('fs');

const port = Number(process.argv[2] || 2775);
const out = process.argv[3] || 'sms.jsonl';
const mode = process.env.SMSC_MODE || 'accept';
let n = 0;

const server = smpp.createServer({ debug: false }, (session) => {
  session.on('error', () => {});
  session.on('bind_transceiver', (pdu) => session.send(pdu.response()));
  session.on('bind_transmitter', (pdu) => session.send(pdu.response()));
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => { session.send(pdu.response()); session.close(); });
  session.on('submit_sm', (pdu) => {
    if (mode === 'refuse') return session.send(pdu.response({ command_status: smpp.ESME_RSYSERR }));
    if (mode === 'throttle') return session.send(pdu.response({ command_status: smpp.ESME_RTHROTTLED }));
    const sm = pdu.short_message;
    const text = typeof sm === 'object' && sm !== null ? String(sm.message) : String(sm);
    fs.appendFileSync(out, JSON.stringify({
      source: pdu.source_addr, source_ton: pdu.source_addr_ton,
      destination: pdu.destination_addr, dest_ton: pdu.dest_addr_ton,
      data_coding: pdu.data_coding, text, t: Date.now(),
    }) + '\n');
    n += 1;
    session.send(pdu.response({ message_id: 'sim' + n }));
  });
});
server.listen(port, '127.0.0.1', () => console.log(`smsc simulator on 127.0.0.1:${port} mode=${mode}`));
process.on('SIGTERM', () => process.exit(0));
