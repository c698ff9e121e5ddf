// Today's page breaks unpatched whatsapp-web.js 1.34.7, and a faithful simulator must break it the
// same way. Public reports (whatsapp-web.js PR #201901, 2026-09-01): a MsgKey no longer has
// `_serialized`, so `Client.sendMessage` ends in `Msg.get(undefined)` and resolves `undefined`
// "even though the message was actually delivered" (also avoylenko/wwebjs-api PR #151, OpenWA#757).
// This test expects that failure: if 1.34.7 sends cleanly on the sim's default (newest) page, the
// simulator no longer models today's page and CI must fail.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { NEWEST_WA_VERSION, once, startSim, waitFor, withTimeout } from './harness.mjs';

const ME = '15550001111';
const FRIEND = '15550002222';

// No --wa-version: the default must be today's page.
const sim = await startSim(null);
const { api, newClient } = sim;
after(() => sim.stop());

test('whatsapp-web.js 1.34.7 on the newest page: sendMessage loses a delivered message', { timeout: 180000 }, async (t) => {
  const client = newClient();
  const qrP = once(client, 'qr', 60000);
  const readyP = once(client, 'ready', 90000);
  client.initialize().catch((e) => console.error('initialize failed', e));

  await t.test('logs in (the page still loads for it)', async () => {
    const [qr] = await qrP;
    await api('POST', '/_sim/scan', { qr, phone: ME, name: 'Compat' });
    await readyP;
    assert.equal(await withTimeout(client.getWWebVersion(), 20000, 'getWWebVersion'), NEWEST_WA_VERSION);
  });

  await t.test('sendMessage resolves undefined (or rejects) though the sim recorded the send', async () => {
    const body = 'sent on the newest page';
    let outcome;
    try {
      outcome = { value: await withTimeout(client.sendMessage(`${FRIEND}@c.us`, body), 30000, 'sendMessage') };
    } catch (e) {
      outcome = { error: e };
    }
    const recorded = await waitFor('the sim to record the message', 20000, async () => {
      const { messages } = await api('GET', `/_sim/messages?phone=${ME}`);
      return messages.find((m) => m.body === body);
    });
    if (outcome.error) {
      assert.doesNotMatch(String(outcome.error), /timed out/, 'a failure, not a hang');
    } else {
      assert.equal(outcome.value, undefined, 'whatsapp-web.js 1.34.7 must not get the message back on today\'s page');
    }
    assert.equal(recorded.to, `${FRIEND}@c.us`, 'recorded by phone number');
    assert.match(recorded.to_lid ?? '', /^\d+@lid$/, 'sent to the LID thread');
  });
});
