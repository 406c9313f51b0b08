// The timeline's chain badge comes from GET /v1/audit/verify (the hashes are over a canonical form that only
// the server computes): for an untouched run it must say "Chain verified".
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { api, baseUrl, openBrowser, required, waitForText } from './lib.mjs';

const runnerToken = required('SBX_RUNNER_TOKEN');
const auditorToken = required('SBX_AUDITOR_TOKEN');
let browser;

before(async () => { browser = await openBrowser(); });
after(async () => { await browser?.close(); });

test('an auditor opening a run\'s timeline sees that its hash chain verifies', async () => {
  const created = await api('/v1/runs', runnerToken, { language: 'python', code: 'print("chain")' });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const verify = await api(`/v1/audit/verify?runId=${created.body.runId}`, auditorToken);
  assert.notEqual(verify.status, 404, 'GET /v1/audit/verify does not exist on this server: this test needs the audit endpoints (audit branch).');

  const page = await browser.page();
  await page.addInitScript((token) => sessionStorage.setItem('sbx.token', token), auditorToken);
  await page.goto(`${baseUrl}/audit/?run=${created.body.runId}`);
  await waitForText(page.locator('#timeline-note'), /\d+ events/);
  const badge = await waitForText(page.locator('#chain'), /verified|broken|unavailable/i);
  assert.match(badge, /^Chain verified/);
  assert.equal(await page.locator('#chain').getAttribute('data-chain'), 'verified');
  await page.close();
});
