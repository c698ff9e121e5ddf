// Proof that `wa-outbox sim` speaks WhatsApp Web's dialect: an unmodified whatsapp-web.js 1.34.7
// (pinned in package-lock.json) logs in, sends, receives and logs out against it, on Debian's
// Chromium, loading the simulator through its documented `webVersionCache` remote option.
// This runs the sim as the early-2026 page 1.34.7 was written for; wwebjs-newest.test.mjs shows
// how the same client breaks on today's page.
//
// Every wait has a deadline; nothing sleeps to synchronise.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import wwebjs from 'whatsapp-web.js';
import {
  EARLY_2026_WA_VERSION,
  once,
  startSim,
  waitFor,
  withTimeout,
} from './harness.mjs';

const { MessageMedia } = wwebjs;

const ME = '15550001111';
const FRIEND = '15550002222';
const STRANGER = '15550003333';
const NOBODY = '15550009999';

// A 1×1 PNG: small, real, and its sha256 is easy to check at the sim.
const PNG_B64 =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==';

const sim = await startSim(EARLY_2026_WA_VERSION);
const { api, newClient } = sim;

after(() => sim.stop());

test('whatsapp-web.js 1.34.7 against the simulator', { timeout: 240000 }, async (t) => {
  const client = newClient();
  const acks = new Map();
  client.on('message_ack', (msg, ack) => {
    const prev = acks.get(msg.id._serialized) ?? -2;
    acks.set(msg.id._serialized, Math.max(prev, ack));
  });

  const qrP = once(client, 'qr', 60000);
  const authP = once(client, 'authenticated', 90000);
  const readyP = once(client, 'ready', 90000);
  client.initialize().catch((e) => console.error('initialize failed', e));

  let qr;
  await t.test('qr', async () => {
    [qr] = await qrP;
    assert.equal(qr.split(',').length, 5, 'QR has five fields');
    const { devices } = await api('GET', '/_sim/devices');
    assert.ok(devices.some((d) => d.state === 'pending' && d.qr === qr), 'the sim lists the QR');
  });

  await t.test('scan → authenticated → ready', async () => {
    await api('POST', '/_sim/scan', { qr, phone: ME, name: 'Compat' });
    await authP;
    await readyP;
    assert.equal(client.info.wid.user, ME);
    assert.equal(client.info.pushname, 'Compat');
  });

  let textId;
  let mediaId;
  const pngSha = createHash('sha256').update(Buffer.from(PNG_B64, 'base64')).digest('hex');

  await t.test('send text and media; the sim records both', async () => {
    const text = await withTimeout(
      client.sendMessage(`${FRIEND}@c.us`, 'hello from whatsapp-web.js'),
      30000,
      'sendMessage(text)',
    );
    assert.ok(text && text.id && text.id.fromMe);
    textId = text.id._serialized;

    const media = new MessageMedia('image/png', PNG_B64, 'dot.png');
    const sent = await withTimeout(
      client.sendMessage(`${FRIEND}@c.us`, media, { caption: 'a dot' }),
      30000,
      'sendMessage(media)',
    );
    assert.ok(sent && sent.id);
    mediaId = sent.id._serialized;

    const recorded = await waitFor('the sim to record both messages', 20000, async () => {
      const { messages } = await api('GET', `/_sim/messages?phone=${ME}`);
      const t1 = messages.find((m) => m.serialized === textId);
      const m1 = messages.find((m) => m.serialized === mediaId);
      return t1 && m1 ? { t1, m1 } : null;
    });
    assert.equal(recorded.t1.kind, 'text');
    assert.equal(recorded.t1.body, 'hello from whatsapp-web.js');
    assert.equal(recorded.t1.to, `${FRIEND}@c.us`);
    assert.equal(recorded.m1.kind, 'image');
    assert.equal(recorded.m1.caption, 'a dot');
    assert.equal(recorded.m1.media.mime, 'image/png');
    assert.equal(recorded.m1.media.size, Buffer.from(PNG_B64, 'base64').length);
    assert.equal(recorded.m1.media.sha256, pngSha);
  });

  await t.test('a reply records the message it quotes', async () => {
    const reply = await withTimeout(
      client.sendMessage(`${FRIEND}@c.us`, 'replying', { quotedMessageId: textId }),
      30000,
      'sendMessage(reply)',
    );
    const rec = await waitFor('the reply at the sim', 20000, async () => {
      const { messages } = await api('GET', `/_sim/messages?phone=${ME}`);
      return messages.find((m) => m.serialized === reply.id._serialized);
    });
    assert.equal(rec.quoted_id, textId.split('_')[2]);
    assert.equal(reply.hasQuotedMsg, true);
  });

  await t.test('message_ack progresses to read', async () => {
    await waitFor('ack 3 (read) on the text message', 20000, () => (acks.get(textId) ?? -2) >= 3);
    // A manual ack from the control API reaches the client too.
    const played = once(client, 'message_ack', 20000, (m, ack) => m.id._serialized === mediaId && ack === 4);
    await api('POST', '/_sim/ack', { id: mediaId, ack: 4 });
    await played;
  });

  await t.test('incoming message fires `message`', async () => {
    const got = once(client, 'message', 20000, (m) => m.body === 'ping from a stranger');
    await api('POST', '/_sim/incoming', { to: ME, from: STRANGER, body: 'ping from a stranger' });
    const [msg] = await got;
    assert.equal(msg.from, `${STRANGER}@c.us`);
    assert.equal(msg.fromMe, false);
  });

  // The other side (issue 13): the simulator's control API plays the contact, and the page raises
  // each where whatsapp-web.js hooks the real page (its table-mode bulkUpsert wrappers, Msg
  // change:body / change:type).
  await t.test("the contact's reaction, vote, edit and revoke fire whatsapp-web.js's events", async () => {
    const reacted = once(client, 'message_reaction', 20000, (r) => r.reaction === '👍');
    await api('POST', '/_sim/react', { to: ME, from: FRIEND, id: textId, emoji: '👍' });
    const [reaction] = await reacted;
    assert.equal(reaction.msgId._serialized, textId);
    assert.equal(reaction.senderId, `${FRIEND}@c.us`);

    const poll = await withTimeout(
      client.sendMessage(`${FRIEND}@c.us`, new wwebjs.Poll('Lunch?', ['Pizza', 'Sushi'])),
      30000,
      'sendMessage(poll)',
    );
    const voted = once(client, 'vote_update', 20000);
    await api('POST', '/_sim/vote', { to: ME, from: FRIEND, poll: poll.id._serialized, options: ['Sushi'] });
    const [vote] = await voted;
    assert.deepEqual(vote.selectedOptions.map((o) => o.name), ['Sushi']);
    assert.equal(vote.voter._serialized ?? vote.voter, `${FRIEND}@c.us`);

    const got = once(client, 'message', 20000, (m) => m.body === 'tpyo');
    await api('POST', '/_sim/incoming', { to: ME, from: FRIEND, body: 'tpyo' });
    const [theirs] = await got;
    const edited = once(client, 'message_edit', 20000);
    await api('POST', '/_sim/edit', { to: ME, from: FRIEND, id: theirs.id._serialized, body: 'typo' });
    const [editedMsg, newBody] = await edited;
    assert.equal(editedMsg.id._serialized, theirs.id._serialized);
    assert.equal(newBody, 'typo');
    const revoked = once(client, 'message_revoke_everyone', 20000);
    await api('POST', '/_sim/revoke', { to: ME, from: FRIEND, id: theirs.id._serialized });
    const [after] = await revoked;
    assert.equal(after.id._serialized, theirs.id._serialized);
    assert.equal(after.type, 'revoked');
  });

  await t.test('getNumberId: unregistered → null, registered → wid', async () => {
    await api('POST', '/_sim/unregistered', { numbers: [NOBODY] });
    assert.equal(await withTimeout(client.getNumberId(NOBODY), 20000, 'getNumberId'), null);
    const wid = await withTimeout(client.getNumberId(FRIEND), 20000, 'getNumberId');
    assert.equal(wid && wid._serialized, `${FRIEND}@c.us`);
  });

  await t.test('faults: a refused send acks -1; a dropped socket comes back', async () => {
    await api('POST', '/_sim/faults', { fail_sends: 1 });
    const failed = await withTimeout(
      client.sendMessage(`${FRIEND}@c.us`, 'this one fails'),
      30000,
      'sendMessage(failing)',
    );
    const failedId = failed.id._serialized;
    await waitFor('ack -1 on the refused message', 20000, () => acks.get(failedId) === -1);
    const { messages } = await api('GET', `/_sim/messages?phone=${ME}`);
    assert.ok(!messages.some((m) => m.serialized === failedId), 'a refused send is not recorded');

    const { dropped } = await api('POST', '/_sim/faults', { drop_socket: true, phone: ME });
    assert.equal(dropped, 1);
    const after = await withTimeout(
      client.sendMessage(`${FRIEND}@c.us`, 'after the drop'),
      30000,
      'sendMessage(after drop)',
    );
    await waitFor('the send after the drop to be recorded', 20000, async () => {
      const r = await api('GET', `/_sim/messages?phone=${ME}`);
      return r.messages.some((m) => m.serialized === after.id._serialized);
    });
    assert.equal(await withTimeout(client.getState(), 20000, 'getState'), 'CONNECTED');
  });

  let again;
  await t.test('restart with the same LocalAuth profile: ready without a qr', async () => {
    await withTimeout(client.destroy(), 30000, 'the first client to close');
    again = newClient();
    let sawQr = false;
    again.on('qr', () => {
      sawQr = true;
    });
    const ready = once(again, 'ready', 90000);
    again.initialize().catch((e) => console.error('initialize failed', e));
    await ready;
    assert.equal(sawQr, false, 'a stored login must not ask for a QR');
    assert.equal(again.info.wid.user, ME);
  });

  await t.test('phone logout fires `disconnected`', async () => {
    const gone = once(again, 'disconnected', 30000);
    await api('POST', '/_sim/logout', { phone: ME });
    await gone;
    const { devices } = await api('GET', '/_sim/devices');
    assert.ok(!devices.some((d) => d.state === 'linked' && d.phone === ME), 'device unlinked');
  });

  await t.test('pairing code instead of a QR', async () => {
    const OTHER = '15550004444';
    const paired = newClient({
      clientId: 'paired',
      options: { pairWithPhoneNumber: { phoneNumber: OTHER, showNotification: false } },
    });
    const codeP = once(paired, 'code', 60000);
    const readyP = once(paired, 'ready', 90000);
    paired.initialize().catch((e) => console.error('initialize failed', e));
    const [code] = await codeP;
    assert.match(code, /^[A-Z0-9]{8}$/);
    await api('POST', '/_sim/pair', { code, phone: OTHER });
    await readyP;
    assert.equal(paired.info.wid.user, OTHER);
  });
});
