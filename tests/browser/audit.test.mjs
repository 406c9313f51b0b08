// The audit viewer in a real browser: an auditor signs in with a pasted token, sees the runs (or that the
// audit list is unavailable on this server) and opens a run's timeline: each event with time, type, facts, hash.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { api, baseUrl, openBrowser, pasteToken, required, screenshot, waitForText } from './lib.mjs';

const runnerToken = required('SBX_RUNNER_TOKEN');
const auditorToken = required('SBX_AUDITOR_TOKEN');
let browser;
let runId;

before(async () => {
  browser = await openBrowser();
  const created = await api('/v1/runs', runnerToken, { language: 'shell', code: 'echo audited; echo warning >&2; exit 2' });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  runId = created.body.runId;
});
after(async () => { await browser?.close(); });

test('an auditor opens a run\'s timeline and sees every event with its time, type, facts and hash', async () => {
  const page = await browser.page();
  await page.goto(`${baseUrl}/audit`);
  await pasteToken(page, auditorToken);
  await waitForText(page.locator('.who .roles'), 'auditor');

  const note = page.locator('#runs-note');
  await waitForText(note, /unavailable|run|No runs/);
  if (!/unavailable/.test(await note.textContent())) {
    await page.locator(`#runs tbody button[title="${runId}"]`).waitFor();
  }
  await screenshot(page, 'audit.png');

  await page.getByLabel('Open a run by its id').fill(runId);
  await page.getByRole('button', { name: 'Open timeline' }).click();
  await waitForText(page.locator('#timeline-note'), /\d+ events/);

  const types = await page.locator('#events > li .type').allTextContents();
  assert.equal(types[0], 'run_requested');
  for (const expected of ['policy_evaluated', 'sandbox_exited', 'output_recorded', 'run_completed']) {
    assert.ok(types.includes(expected), `the timeline has ${expected}: ${types.join(', ')}`);
  }
  const events = page.locator('#events > li');
  for (let i = 0; i < types.length; i++) {
    const item = events.nth(i);
    assert.match(await item.locator('time').textContent(), /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ UTC$/);
    assert.match(await item.locator('code.hash').textContent(), /^[0-9a-f]{12}…$/);
  }
  await waitForText(page.locator('#events > li[data-type="run_completed"] .keyfacts'), /status: failed.*exit code: 2/s);
  await waitForText(page.locator('#events > li[data-type="policy_evaluated"] .keyfacts'), 'decision: allow');
  await waitForText(page.locator('#run-facts'), 'browser-runner');
  await waitForText(page.locator('#chain'), /verified|broken|unavailable/i);
  assert.ok(page.url().endsWith(`?run=${runId}`), 'the timeline has its own address');

  await screenshot(page, 'audit-timeline.png');
  await page.close();
});

test('an auditor takes a checkpoint, sees its head and verifies every recorded checkpoint', async () => {
  const page = await browser.page();
  await page.goto(`${baseUrl}/audit/`);
  await pasteToken(page, auditorToken);
  await waitForText(page.locator('.who .roles'), 'auditor');

  await page.getByRole('button', { name: 'Take a checkpoint' }).click();
  await waitForText(page.locator('#checkpoint-note'), 'Checkpoint recorded');
  const head = page.locator('#checkpoint-head');
  assert.match(await head.textContent(), /Root[0-9a-f]{64}/);
  assert.match(await head.textContent(), /Events\d+/);

  await page.getByRole('button', { name: 'Verify checkpoints' }).click();
  await waitForText(page.locator('#checkpoint-state'), /Checkpoints verified \(\d+ checked\)/);
  await screenshot(page, 'audit-checkpoints.png');
  await page.close();
});

test('the audit pages load nothing from anywhere but the service and raise no errors', () => {
  assert.deepEqual(browser.foreign, []);
  assert.deepEqual(browser.errors, []);
});
