// Browser tests of the samgate console (DESIGN §11), run by run.sh against a
// real `samgate serve` started from `samgate init`: Debian's Chromium driven
// by playwright-core, the people presenting their personal client
// certificates (.p12 from init), agencies their party certificates.
//
// Env: SAMGATE_DIR (the init directory), SAMGATE_URL (https://127.0.0.1:PORT),
// SAMGATE_LOG (the gateway's log file), SCREENSHOTS (directory, optional),
// CHROMIUM (default /usr/bin/chromium).
import assert from "node:assert/strict";
import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const AXE = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const DIR = process.env.SAMGATE_DIR;
const BASE = process.env.SAMGATE_URL;
const LOG = process.env.SAMGATE_LOG;
const SHOTS = process.env.SCREENSHOTS || "";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
assert.ok(DIR && BASE, "SAMGATE_DIR and SAMGATE_URL must be set");

// A valid personnummer (Luhn) and one with a wrong check digit.
const PNR = "19851224-1236";
const BAD_PNR = "19851224-1237";
const PNR_RE = /851224[-+ ]?123[67]/;

const pki = (p) => path.join(DIR, "pki", p);
const urls = [];
const pages = [];
let failures = 0;

async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}\n     ${String(e && e.stack || e).split("\n").join("\n     ")}`);
  }
}

/// An agency's API call with its party certificate (the exchange path).
function api(party, method, route, body) {
  const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const u = new URL(route, BASE);
    const req = https.request({
      hostname: u.hostname, port: u.port, path: u.pathname + u.search, method,
      cert: fs.readFileSync(pki(`${party}.pem`)), key: fs.readFileSync(pki(`${party}.key`)),
      ca: fs.readFileSync(pki("ca.pem")),
      headers: data ? { "content-type": "application/json", "content-length": data.length } : {},
    }, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => {
        let json = null;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode, json, text });
      });
    });
    req.on("error", reject);
    if (data) req.write(data);
    req.end();
  });
}

function attendance() {
  return {
    to: "fk", type: "attendance-report", purpose: "samordnad-rehabilitering",
    subject: PNR, delivery: "sync",
    payload: { period: { start: "2026-11-01", end: "2026-11-30" }, scheduled_hours: 60, attended_hours: 52, absence_reason_category: "sick" },
  };
}

const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const contexts = [];

/// One browser per person, each with a fresh --user-data-dir (Playwright
/// takes the profile directory as launchPersistentContext's first argument).
async function context(cert) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "samgate-chromium-"));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    ignoreHTTPSErrors: true,
    acceptDownloads: true,
    clientCertificates: [{ origin: BASE, ...cert }],
    viewport: { width: 1200, height: 900 },
    locale: "sv-SE",
  });
  contexts.push(ctx);
  ctx.on("request", (r) => urls.push(r.url()));
  ctx.on("response", async (r) => {
    const type = r.headers()["content-type"] || "";
    if (type.startsWith("text/html")) {
      try { pages.push({ url: r.url(), html: await r.text(), headers: r.headers() }); } catch { /* navigated away */ }
    }
  });
  return ctx;
}

async function newPage(ctx) {
  const page = await ctx.newPage();
  page.cspViolations = [];
  page.on("console", (m) => { if (/Content Security Policy|Refused to/.test(m.text())) page.cspViolations.push(m.text()); });
  page.on("pageerror", (e) => page.cspViolations.push(String(e)));
  return page;
}

/// axe-core on the current page: no serious or critical violation. The
/// script is evaluated through the DevTools protocol (the page's CSP allows
/// no inline script, rightly).
async function axe(page, name) {
  await page.evaluate(AXE + "\n;0");
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });
  const bad = result.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(bad, [], `${name}: axe found serious or critical violations`);
  assert.deepEqual(page.cspViolations, [], `${name}: CSP violations or script errors`);
}

async function shot(page, name) {
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

const intake = await context({ pfxPath: pki("users/anna.lind.p12"), passphrase: "" });
const auditor = await context({ pfxPath: pki("users/erik.berg.p12"), passphrase: "" });
const agency = await context({ certPath: pki("af.pem"), keyPath: pki("af.key") });
const ip = await newPage(intake);
let consentUrl = "";
let deniedSeq = 0;

await step("intake user sees the start page and the intake form", async () => {
  const bare = await ip.goto(`${BASE}/console`);
  assert.equal(bare.status(), 200);
  assert.equal(ip.url(), `${BASE}/console/`);
  const r = await ip.goto(`${BASE}/console/`);
  assert.equal(r.status(), 200);
  const h = r.headers();
  assert.match(h["content-security-policy"], /default-src 'self'/);
  assert.equal(h["cache-control"], "no-store");
  await assert.doesNotReject(ip.getByText("Anna Lind").first().waitFor());
  await axe(ip, "start");
  await shot(ip, "start");
  await ip.getByRole("link", { name: "Till intaget" }).click();
  await ip.waitForURL(`${BASE}/console/intake`);
  await axe(ip, "intake");
  await shot(ip, "intake");
});

await step("the form refuses an invalid personnummer, a missing party and an expired validity", async () => {
  await ip.goto(`${BASE}/console/intake`);
  await ip.fill("#pnr-new", BAD_PNR);
  await ip.uncheck("#party-fk");
  await ip.uncheck("#party-kommun-kalmar");
  await ip.uncheck("#party-region-kalmar");
  await ip.uncheck("#party-sfk-kalmar");
  await ip.check("#cat-attendance");
  await ip.fill("#valid-until", "2020-01-01");
  await ip.getByRole("button", { name: "Registrera samtycket" }).click();
  const alert = ip.locator("#form-errors");
  await alert.waitFor();
  const text = await alert.innerText();
  assert.match(text, /kontrollsiffra stämmer inte/);
  assert.match(text, /minst två parter/);
  assert.match(text, /redan gått ut/);
  assert.equal(await ip.inputValue("#pnr-new"), "", "the number is not written back");
  assert.ok(!PNR_RE.test(ip.url()));
  await axe(ip, "intake with errors");
  await shot(ip, "intake-errors");
});

await step("intake user records a consent from the form", async () => {
  await ip.goto(`${BASE}/console/intake`);
  await ip.fill("#pnr-new", PNR);
  await ip.check("#cat-case");
  await ip.check("#cat-attendance");
  await ip.check("#method-bankid");
  await ip.selectOption("#given-by-role", "god-man");
  await ip.fill("#given-by-name", "Gustav Godman");
  await ip.getByRole("button", { name: "Registrera samtycket" }).click();
  await ip.waitForURL(/\/console\/intake\/consents\/[0-9a-f-]{36}$/);
  consentUrl = ip.url();
  assert.equal(await ip.locator("strong.state").innerText(), "Giltigt");
  const body = await ip.locator("main").innerText();
  assert.match(body, /Försäkringskassan/);
  assert.match(body, /Närvaro/);
  assert.match(body, /Anna Lind/);
  await axe(ip, "consent");
  await shot(ip, "consent");
});

await step("an exchange under the consent is delivered", async () => {
  const r = await api("af", "POST", "/v1/exchanges", attendance());
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.status, "delivered");
});

await step("intake user finds the consent by POST", async () => {
  await ip.goto(`${BASE}/console/intake`);
  await ip.fill("#pnr-search", PNR);
  await ip.getByRole("button", { name: "Sök samtycken" }).click();
  await ip.waitForURL(`${BASE}/console/intake/search`);
  const link = ip.getByRole("link", { name: /Öppna samtycket/ });
  assert.equal(await link.count(), 1);
  await axe(ip, "search");
  await shot(ip, "search");
  await link.click();
  await ip.waitForURL(consentUrl);
});

await step("intake user revokes it with a reason", async () => {
  await ip.goto(consentUrl);
  await ip.getByRole("button", { name: "Återkalla samtycket" }).click();
  await ip.locator("#form-errors").waitFor();
  await ip.fill("#reason", "Deltagaren ringde och återkallade.");
  await ip.getByRole("button", { name: "Återkalla samtycket" }).click();
  await ip.waitForURL(consentUrl);
  assert.equal(await ip.locator("strong.state").innerText(), "Återkallat");
  assert.equal(await ip.getByRole("button", { name: "Återkalla samtycket" }).count(), 0);
});

await step("intake user prints the receipt", async () => {
  await ip.addInitScript(() => { window.__printed = 0; window.print = () => { window.__printed++; }; });
  await ip.goto(`${consentUrl}/receipt`);
  const main = await ip.locator("main").innerText();
  for (const want of ["Kvitto på samtycke", "Rättslig grund", "God man: Gustav Godman", "Återkallat", "Med BankID", "Närvaro"]) {
    assert.ok(main.includes(want), `receipt lacks ${want}`);
  }
  await ip.getByRole("button", { name: "Skriv ut kvittot" }).click();
  assert.equal(await ip.evaluate(() => window.__printed), 1);
  await axe(ip, "receipt");
  await shot(ip, "receipt");
  await ip.emulateMedia({ media: "print" });
  assert.equal(await ip.locator("header.top").isVisible(), false, "the print layout hides the navigation");
  const pdf = await ip.pdf({ format: "A4" });
  assert.ok(pdf.length > 1000);
  await ip.emulateMedia({ media: "screen" });
});

await step("an exchange after the revocation is refused", async () => {
  const r = await api("af", "POST", "/v1/exchanges", attendance());
  assert.equal(r.status, 403, r.text);
  assert.equal(r.json.type, "urn:samgate:problem:consent_revoked");
});

await step("intake user prints the register extract in plain Swedish", async () => {
  await ip.goto(`${BASE}/console/intake`);
  await ip.fill("#pnr-extract", PNR);
  await ip.getByRole("button", { name: "Visa registerutdrag" }).click();
  await ip.waitForURL(`${BASE}/console/intake/extract`);
  const text = await ip.locator("ol.extract").innerText();
  assert.match(text, /Arbetsförmedlingen lämnade närvarorapport till Försäkringskassan/);
  assert.match(text, /närvarande timmar/);
  assert.match(text, /stoppades/);
  await axe(ip, "extract");
  await shot(ip, "extract");
});

const ap = await newPage(auditor);

await step("auditor lists the records with filters and finds the refusal", async () => {
  const r = await ap.goto(`${BASE}/console/audit`);
  assert.equal(r.status(), 200);
  await axe(ap, "audit");
  await ap.selectOption("#f-action", "exchange-denied");
  await ap.getByRole("button", { name: "Visa" }).click();
  await ap.waitForURL(/action=exchange-denied/);
  const rows = ap.locator("table tbody tr");
  assert.ok((await rows.count()) >= 1);
  const first = rows.first();
  assert.match(await first.innerText(), /consent_revoked/);
  deniedSeq = Number(await first.locator("td a").first().innerText());
  await shot(ap, "audit");
});

await step("the record of the refusal is verified in the browser", async () => {
  await ap.goto(`${BASE}/console/audit/records/${deniedSeq}`);
  const status = ap.locator("#verify-status");
  await ap.waitForFunction(() => !document.getElementById("verify-status").classList.contains("pending"));
  assert.match(await status.innerText(), /^Verifierad här/);
  assert.equal(await status.getAttribute("class"), "status ok");
  assert.match(await ap.locator("main").innerText(), /consent_revoked/);
  await axe(ap, "record");
  await shot(ap, "record-verified");
});

await step("a tampered proof makes the page say the check failed", async () => {
  const tp = await newPage(auditor);
  await tp.route("**/v1/audit/proof/inclusion**", async (route) => {
    const rsp = await route.fetch();
    const body = await rsp.json();
    assert.ok(body.hashes.length > 0, "the proof has hashes to alter");
    const h = body.hashes[0];
    body.hashes[0] = (h[0] === "0" ? "1" : "0") + h.slice(1);
    await route.fulfill({ response: rsp, json: body });
  });
  await tp.goto(`${BASE}/console/audit/records/${deniedSeq}`);
  await tp.waitForFunction(() => !document.getElementById("verify-status").classList.contains("pending"));
  const text = await tp.locator("#verify-status").innerText();
  assert.match(text, /^Kontrollen misslyckades/);
  assert.ok(!/Verifierad här/.test(await tp.locator("main").innerText()));
  await shot(tp, "record-tampered");
  await tp.close();
});

await step("a tampered checkpoint signature fails too", async () => {
  const tp = await newPage(auditor);
  await tp.route("**/v1/audit/tree-head", async (route) => {
    const rsp = await route.fetch();
    const body = await rsp.json();
    // Change the signed tree size in the note text: the signature no longer matches.
    body.checkpoint = body.checkpoint.replace(/\n(\d+)\n/, (_, n) => `\n${Number(n) + 1}\n`);
    body.tree_size += 1;
    await route.fulfill({ response: rsp, json: body });
  });
  await tp.goto(`${BASE}/console/audit/records/${deniedSeq}`);
  await tp.waitForFunction(() => !document.getElementById("verify-status").classList.contains("pending"));
  assert.match(await tp.locator("#verify-status").innerText(), /^Kontrollen misslyckades/);
  await tp.close();
});

await step("auditor sees the tree-head history", async () => {
  await ap.goto(`${BASE}/console/audit/tree-heads`);
  assert.ok((await ap.locator("table tbody tr").count()) >= 1);
  await axe(ap, "tree heads");
  await shot(ap, "tree-heads");
});

await step("subject search needs a reason, which lands in the audit-query record", async () => {
  await ap.goto(`${BASE}/console/audit/subject-search`);
  await ap.fill("#pnr-audit", PNR);
  await ap.getByRole("button", { name: "Sök" }).click();
  await ap.locator("#form-errors").waitFor();
  assert.match(await ap.locator("#form-errors").innerText(), /Ange ett skäl/);
  const reason = "Granskning dnr 2026/17";
  await ap.fill("#pnr-audit", PNR);
  await ap.fill("#reason", reason);
  await ap.getByRole("button", { name: "Sök" }).click();
  await ap.waitForURL(`${BASE}/console/audit/subject-search`);
  assert.match(await ap.locator("main").innerText(), /Utbyte nekat/);
  await axe(ap, "subject search");
  await shot(ap, "subject-search");
  // The auditor's certificate works on the API as well (no JWT needed).
  const rsp = await ap.request.get(`${BASE}/v1/audit/records?action=audit-query&limit=1000`);
  assert.equal(rsp.status(), 200);
  const recs = (await rsp.json()).records;
  const hit = recs.find((r) => r.reason === `subject-search: ${reason}`);
  assert.ok(hit, "an audit-query record carries the reason");
  assert.equal(hit.actor_user, "erik.berg");
  assert.match(hit.subject, /^ps1_/);
});

await step("auditor downloads the export", async () => {
  await ap.goto(`${BASE}/console/audit`);
  const [download] = await Promise.all([
    ap.waitForEvent("download"),
    ap.getByRole("link", { name: /Ladda ner hela loggen/ }).click(),
  ]);
  const file = await download.path();
  const lines = fs.readFileSync(file, "utf8").trim().split("\n");
  assert.ok(lines.length > 3);
  assert.ok(JSON.parse(lines[lines.length - 1]).tree_head);
  assert.match(download.suggestedFilename(), /\.ndjson$/);
});

await step("an agency certificate and an auditor's certificate are refused on intake pages", async () => {
  const gp = await newPage(agency);
  for (const p of ["/console/intake", `${new URL(consentUrl).pathname}/receipt`]) {
    const r = await gp.goto(`${BASE}${p}`);
    assert.equal(r.status(), 403, `agency on ${p}`);
    assert.match(await gp.locator("main").innerText(), /personligt certifikat/);
  }
  await axe(gp, "refused (agency)");
  const r2 = await ap.goto(`${BASE}/console/intake`);
  assert.equal(r2.status(), 403);
  assert.match(await ap.locator("main").innerText(), /intagets sidor/);
  await shot(ap, "refused");
  const post = await ap.request.post(`${BASE}/console/intake/search`, { form: { personnummer: PNR, csrf: "x" } });
  assert.equal(post.status(), 403);
  const r3 = await ip.goto(`${BASE}/console/audit`);
  assert.equal(r3.status(), 403, "intake user on audit pages");
});

await step("a form post without a valid CSRF token is refused", async () => {
  const r = await ip.request.post(`${BASE}/console/intake/search`, { form: { personnummer: PNR, csrf: "forged" } });
  assert.equal(r.status(), 403);
  const r2 = await ip.request.post(`${BASE}/console/intake/search`, { form: { personnummer: PNR } });
  assert.equal(r2.status(), 403);
});

await step("no page, title or URL contains the personnummer", async () => {
  assert.ok(urls.length > 20 && pages.length > 10);
  for (const u of urls) assert.ok(!PNR_RE.test(decodeURIComponent(u)), `URL ${u}`);
  for (const p of pages) {
    assert.ok(!PNR_RE.test(p.html), `page ${p.url} contains the number`);
    if (p.url.includes("/console/intake") || p.url.includes("/console/audit")) {
      assert.equal(p.headers["cache-control"], "no-store", p.url);
    }
  }
  if (LOG) assert.ok(!PNR_RE.test(fs.readFileSync(LOG, "utf8")), "the gateway log contains the number");
});

for (const c of contexts) await c.close();
if (failures) {
  console.log(`${failures} console test(s) failed`);
  process.exit(1);
}
console.log("all console tests passed");
