// Screenshot of the simulator's page once it has settled (QR shown or logged in):
//   node screenshot.mjs http://127.0.0.1:PORT/ out.png [profile-dir]
// `chromium --screenshot` fires at the load event, before the page has read its profile and
// heard from the server, so it would only ever show OPENING.
import puppeteer from 'puppeteer';

const [url, out, profile] = process.argv.slice(2);
if (!url || !out) {
  console.error('usage: node screenshot.mjs URL OUT.png [PROFILE_DIR]');
  process.exit(2);
}
const browser = await puppeteer.launch({
  executablePath: process.env.WA_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu'],
  userDataDir: profile,
  defaultViewport: { width: 1000, height: 800 },
});
try {
  const page = (await browser.pages())[0];
  await page.goto(url, { waitUntil: 'load', timeout: 30000 });
  await page.waitForFunction(
    () => {
      const s = window.require && window.require('WAWebSocketModel').Socket;
      return s && (s.state === 'UNPAIRED' || (s.state === 'CONNECTED' && s.hasSynced));
    },
    { timeout: 30000, polling: 100 },
  );
  // One frame for the canvas and chat list to paint.
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  await page.screenshot({ path: out });
} finally {
  await browser.close();
}
