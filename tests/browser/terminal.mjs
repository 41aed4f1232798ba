// Drives the browser terminal in a real headless Chromium (playwright-core), as a
// user would: sign in with a token, type, resize, interrupt, exit, reconnect; then a
// user without access and a bad token. Run by tests/browser_terminal.rs, which
// passes (env):
//   BASE         the API's URL          SANDBOX   the sandbox id
//   TOKEN        a token of its owner   OUTSIDER  a token of a user without access
//   REFUSAL      what `ssh` tells the outsider
//   SCREENSHOT   where to save a picture of the terminal
// Prints one JSON line of what it saw; exits non-zero with the reason on failure.
import { createRequire } from 'node:module';
const require = createRequire(process.env.PLAYWRIGHT_DIR + '/');
const { chromium } = require('playwright-core');

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const BASE = env('BASE'), SANDBOX = env('SANDBOX');
const seen = {};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-dev-shm-usage'],
});

/// The terminal's visible text.
const screen = (page) => page.evaluate(() => {
  const rows = document.querySelector('.xterm-rows');
  return rows ? rows.innerText : '';
});

/// Waits until the screen matches `re`; returns the match.
async function waitFor(page, re, what, ms = 30000) {
  const until = Date.now() + ms;
  for (;;) {
    const text = await screen(page);
    const m = text.match(re);
    if (m) return m;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}; screen:\n${text}`);
    await page.waitForTimeout(100);
  }
}

async function signIn(page, token) {
  await page.goto(`${BASE}/terminal/${encodeURIComponent(SANDBOX)}`);
  await page.fill('#token', token);
  await page.click('button[type=submit]');
}

/// Types a line into the terminal.
async function line(page, text) {
  await page.locator('.xterm-helper-textarea').focus();
  await page.keyboard.type(text);
  await page.keyboard.press('Enter');
}

try {
  const context = await browser.newContext({ viewport: { width: 900, height: 500 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await signIn(page, env('TOKEN'));
  // The token never goes into the address bar.
  if (page.url().includes(process.env.TOKEN)) throw new Error('the token is in the URL');
  await line(page, 'echo $((6*7))');
  await waitFor(page, /^42$/m, 'the answer 42');
  seen.answer = 42;

  await line(page, 'echo size-$(stty size)-end');
  const before = await waitFor(page, /size-(\d+) (\d+)-end/, 'the first size');
  await page.setViewportSize({ width: 1300, height: 800 });
  await page.waitForTimeout(300);
  await line(page, 'clear; echo size2-$(stty size)-end');
  const after = await waitFor(page, /size2-(\d+) (\d+)-end/, 'the second size');
  seen.size_before = [Number(before[1]), Number(before[2])];
  seen.size_after = [Number(after[1]), Number(after[2])];

  // Ctrl-C reaches the program through the terminal.
  await line(page, 'sleep 300; echo not-interrupted');
  await page.waitForTimeout(500);
  await page.keyboard.press('Control+C');
  await line(page, 'echo after-$((40+2))');
  await waitFor(page, /^after-42$/m, 'the shell after Ctrl-C');
  // The command line shows the words; only the interrupted sleep's echo would print
  // them on a line of their own.
  seen.interrupted = !/^not-interrupted$/m.test(await screen(page));

  await page.screenshot({ path: env('SCREENSHOT') });

  await line(page, 'exit 3');
  await waitFor(page, /\[exited with status 3\]/, 'the exit status');
  await waitFor(page, /press Enter to reconnect/, 'the reconnect hint');
  seen.exit = 3;
  await page.keyboard.press('Enter');
  await page.waitForTimeout(500);
  await line(page, 'echo again-$((2*3))');
  await waitFor(page, /^again-6$/m, 'a shell after reconnecting');
  seen.reconnected = true;
  if (errors.length) throw new Error('page errors: ' + errors.join('; '));
  await context.close();

  // A user without access reads what ssh tells them.
  const outsider = await browser.newPage();
  await signIn(outsider, env('OUTSIDER'));
  const refusal = env('REFUSAL');
  await waitFor(outsider, new RegExp(refusal.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 'the refusal');
  await waitFor(outsider, /\[exited with status 1\]/, "the refusal's exit status");
  seen.refused = true;
  await outsider.close();

  // A wrong token is asked again, with the reason.
  const wrong = await browser.newPage();
  await signIn(wrong, 'sgw_not-a-real-token');
  await wrong.waitForSelector('#login:not([hidden])');
  await wrong.waitForFunction(() => document.getElementById('login-error').textContent.length > 0);
  seen.bad_token = await wrong.textContent('#login-error');
  await wrong.close();
  console.log(JSON.stringify(seen));
} catch (e) {
  console.error(String(e && e.stack || e));
  console.log(JSON.stringify(seen));
  process.exitCode = 1;
} finally {
  await browser.close();
}
