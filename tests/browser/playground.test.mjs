// The playground in a real browser: sign in, type code, run it, see the output; a denied run shows the
// policy's reasons; the page works at phone width and loads nothing from anywhere but the service.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, test } from 'node:test';
import { baseUrl, openBrowser, screenshot, waitForText } from './lib.mjs';

const tenant = process.env.SBX_TENANT ?? 'tenant-browser';
let browser;

before(async () => { browser = await openBrowser(); });
after(async () => { await browser?.close(); });

async function devSignIn(page, subject) {
  await page.goto(`${baseUrl}/`);
  await page.locator('#dev-form').waitFor({ state: 'visible' });
  await page.getByLabel('Subject').fill(subject);
  await page.getByLabel('Tenant').fill(tenant);
  await page.getByLabel('Role').selectOption('runner');
  await page.getByRole('button', { name: 'Get a development token' }).click();
  await waitForText(page.locator('#who-name'), `${subject} @ ${tenant}`);
}

async function typeCode(page, code) {
  const editor = page.locator('.cm-content');
  await editor.click();
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  await page.keyboard.type(code);
}

test('a person types code, runs it with Ctrl+Enter and sees the output, its hash and the run in the list', async () => {
  const page = await browser.page();
  await devSignIn(page, 'browser-alice');
  assert.equal(await page.locator('.cm-lineNumbers').count(), 1, 'the editor shows line numbers');

  await typeCode(page, 'import sys; print("hello, " + sys.stdin.read().strip())');
  await page.getByLabel('Standard input').fill('browser');
  await page.locator('.cm-content').click();
  await page.keyboard.press('Control+Enter');

  await waitForText(page.locator('#status'), 'Succeeded');
  assert.equal(await page.locator('#stdout').textContent(), 'hello, browser\n');
  assert.equal(await page.locator('#exit-code').textContent(), '0');
  assert.match(await page.locator('#duration').textContent(), /^\d+(\.\d+)? (ms|s)$/);
  assert.equal(await page.locator('#stdout-sha').textContent(), createHash('sha256').update('hello, browser\n').digest('hex'));
  assert.ok(await page.locator('.cm-line span[class]').count() > 0, 'the code is highlighted');
  await waitForText(page.locator('#recent tbody'), 'python');

  await screenshot(page, 'playground.png');
  await page.close();
});

test('a person uploads a CSV, the program summarises it into out/, and the artifact is listed with its digest', async () => {
  const page = await browser.page();
  await devSignIn(page, 'browser-erin');
  await typeCode(page, 'import json; rows = open("tx.csv").read().splitlines()[1:]; json.dump({"rows": len(rows)}, open("out/summary.json", "w")); print(len(rows))');
  await page.getByLabel('Input files').setInputFiles({ name: 'tx.csv', mimeType: 'text/csv', buffer: Buffer.from('id,amount\n1,10\n2,20\n3,30\n') });
  await page.getByRole('button', { name: 'Run' }).click();

  await waitForText(page.locator('#status'), 'Succeeded');
  assert.equal(await page.locator('#stdout').textContent(), '3\n');
  const artifact = page.locator('#artifacts li', { hasText: 'summary.json' });
  await artifact.waitFor({ state: 'visible' });
  const expected = createHash('sha256').update('{"rows": 3}').digest('hex');
  assert.equal(await artifact.locator('code').textContent(), expected);
  assert.match(await artifact.textContent(), /11 bytes · application\/json/);

  const [download] = await Promise.all([page.waitForEvent('download'), artifact.getByRole('link', { name: 'Download summary.json' }).click()]);
  assert.equal(download.suggestedFilename(), 'summary.json');

  await screenshot(page, 'playground-artifacts.png');
  await page.close();
});

test('choosing JavaScript loads its example, which runs with the Run button', async () => {
  const page = await browser.page();
  await devSignIn(page, 'browser-bob');
  await page.getByLabel('Language').selectOption('javascript');
  await waitForText(page.locator('.cm-content'), 'console.log');
  await page.getByRole('button', { name: 'Run' }).click();
  await waitForText(page.locator('#status'), 'Succeeded');
  assert.match(await page.locator('#stdout').textContent(), /^Hello, world!\nsquares: \[ 0, 1, 4, 9, 16, 25 \]\n$/);
  await page.close();
});

test('a run the policy denies shows the policy\'s reasons', async () => {
  const page = await browser.page();
  await devSignIn(page, 'browser-carol');
  await typeCode(page, 'print("secret")');
  await page.getByLabel('Data classification').selectOption('restricted');
  await page.getByRole('button', { name: 'Run' }).click();

  await waitForText(page.locator('#status'), 'Denied by policy');
  const problem = page.locator('#problem');
  await waitForText(problem, 'Denied by policy');
  const reasons = await problem.locator('.reasons li').allTextContents();
  assert.ok(reasons.length > 0, 'the reasons are listed');
  assert.ok(reasons.some((r) => /reviewer/.test(r)), `a reason names the missing reviewer role: ${JSON.stringify(reasons)}`);
  assert.equal(await page.locator('#stdout').textContent(), '');

  await screenshot(page, 'playground-denied.png');
  await page.close();
});

test('at phone width everything fits without sideways scrolling', async () => {
  const page = await browser.page({ width: 390, height: 844 });
  await devSignIn(page, 'browser-dan');
  await page.getByRole('button', { name: 'Run' }).click();
  await waitForText(page.locator('#status'), 'Succeeded');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
  await screenshot(page, 'phone-width.png');
  await page.close();
});

// The two tests below answer one request in the page itself (page.route): the service can't be made to send a
// 429 on demand, and its stream endpoint lives on another branch. Everything else is the real service.
test('a 429 shows when to retry and the Run button counts down', async () => {
  const page = await browser.page();
  await devSignIn(page, 'browser-erin');
  await page.route('**/v1/runs', (route) => route.request().method() !== 'POST' ? route.continue() : route.fulfill({
    status: 429,
    headers: { 'Content-Type': 'application/problem+json', 'Retry-After': '30' },
    body: JSON.stringify({ type: '/problems/rate-limited', title: 'Too many requests', status: 429, detail: 'You started too many runs; retry after 30 s.' }),
  }));
  await page.getByRole('button', { name: 'Run' }).click();

  await waitForText(page.locator('#problem'), /Retry after \d\d:\d\d:\d\d \(in (29|30) s\)/);
  await waitForText(page.locator('#status'), 'Refused');
  assert.match(await page.locator('#run').textContent(), /^Retry in \d+ s$/);
  assert.equal(await page.locator('#run').isDisabled(), true);
  await page.close();
});

test('output streams into the panes while the run is going, then the stored result replaces it', async () => {
  const page = await browser.page();
  await devSignIn(page, 'browser-fay');
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  await page.route(/\/v1\/runs\/[0-9a-f-]{36}$/, async (route) => { await held; await route.continue(); });
  await page.route(/\/v1\/runs\/[0-9a-f-]{36}\/stream$/, (route) => route.fulfill({
    status: 200,
    headers: { 'Content-Type': 'text/event-stream' },
    body: 'event: sandbox_started\ndata: {"type":"sandbox_started"}\n\n'
      + 'event: stdout\ndata: {"content":"live chunk\\n","encoding":"utf-8"}\n\n'
      + 'event: stderr\ndata: {"content":"bGl2ZSBlcnJvcgo=","encoding":"base64"}\n\n'
      + 'event: run_completed\ndata: {"type":"run_completed","status":"succeeded"}\n\n',
  }));
  await typeCode(page, 'print("final")');
  await page.getByRole('button', { name: 'Run' }).click();

  await waitForText(page.locator('#stdout'), 'live chunk\n');
  await waitForText(page.locator('#stderr'), 'live error\n');
  assert.equal(await page.locator('#status').textContent(), 'Running');
  release();
  await waitForText(page.locator('#status'), 'Succeeded');
  assert.equal(await page.locator('#stdout').textContent(), 'final\n');
  await page.close();
});

test('the pages load nothing from anywhere but the service and raise no errors', () => {
  assert.deepEqual(browser.foreign, []);
  assert.deepEqual(browser.errors, []);
});
