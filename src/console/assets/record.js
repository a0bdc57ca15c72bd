// samgate console, record page: verify the record's inclusion proof and the
// signed checkpoint in this browser (WebCrypto SHA-256 and Ed25519), not on
// the server's word. RFC 9162 (Merkle tree, inclusion proof) and C2SP
// signed-note / tlog-checkpoint (the tree head). Shows "Verifierad här"
// only when every check below passed.
"use strict";
(function () {
  var section = document.getElementById("verify");
  if (!section) { return; }
  var status = document.getElementById("verify-status");
  var steps = document.getElementById("verify-steps");
  var again = document.getElementById("verify-again");
  var enc = new TextEncoder();

  function b64(s) {
    var bin = atob(s);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out;
  }
  function b64url(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) { s += "="; }
    return b64(s);
  }
  function hex(bytes) {
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  function unhex(h) {
    if (typeof h !== "string" || !/^([0-9a-f]{2})+$/.test(h)) { throw new Error("en hash är inte hexadecimal"); }
    var out = new Uint8Array(h.length / 2);
    for (var i = 0; i < out.length; i++) { out[i] = parseInt(h.substr(i * 2, 2), 16); }
    return out;
  }
  function concat(parts) {
    var n = 0;
    parts.forEach(function (p) { n += p.length; });
    var out = new Uint8Array(n);
    var o = 0;
    parts.forEach(function (p) { out.set(p, o); o += p.length; });
    return out;
  }
  function same(a, b) {
    if (a.length !== b.length) { return false; }
    var d = 0;
    for (var i = 0; i < a.length; i++) { d |= a[i] ^ b[i]; }
    return d === 0;
  }
  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }
  async function getJson(url) {
    var r = await fetch(url, { credentials: "same-origin", cache: "no-store", headers: { "Accept": "application/json" } });
    if (!r.ok) { throw new Error(url.split("?")[0] + " svarade " + r.status); }
    return r.json();
  }

  // RFC 9162 §2.1.3.2: the root implied by a leaf hash and its inclusion path.
  async function rootFromInclusion(index, size, leafHash, path) {
    if (!(index < size)) { throw new Error("posten ligger utanför trädet"); }
    var fn = index, sn = size - 1, r = leafHash;
    for (var i = 0; i < path.length; i++) {
      var p = path[i];
      if (sn === 0) { throw new Error("beviset har för många hashar"); }
      if (fn % 2 === 1 || fn === sn) {
        r = await sha256(concat([new Uint8Array([1]), p, r]));
        if (fn % 2 === 0) {
          while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
        }
      } else {
        r = await sha256(concat([new Uint8Array([1]), r, p]));
      }
      fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
    }
    if (sn !== 0) { throw new Error("beviset har för få hashar"); }
    return r;
  }

  function step(text, ok) {
    var li = document.createElement("li");
    li.className = ok ? "ok" : "failed";
    li.textContent = text;
    steps.appendChild(li);
  }
  function check(cond, okText, failText) {
    if (!cond) { step(failText, false); throw new Error(failText); }
    step(okText, true);
  }

  async function verify() {
    steps.textContent = "";
    status.className = "status pending";
    status.textContent = "Kontrollerar i webbläsaren …";
    var seq = Number(section.getAttribute("data-seq"));
    var leaf = b64(section.getAttribute("data-leaf") || "");
    var record = JSON.parse(new TextDecoder().decode(leaf));
    check(record.seq === seq, "Postens innehåll har nummer " + seq + ".", "Postens innehåll har fel nummer.");

    var keys = await getJson("/v1/keys");
    var jwk = (keys.keys || []).filter(function (k) { return k.samgate_purpose === "audit" && k.crv === "Ed25519"; })[0];
    check(!!jwk, "Granskningsnyckeln hämtades.", "Granskningsnyckeln saknas.");
    var pub = b64url(jwk.x);
    check(pub.length === 32, "Granskningsnyckeln är en Ed25519-nyckel.", "Granskningsnyckeln har fel längd.");

    var head = await getJson("/v1/audit/tree-head");
    var note = String(head.checkpoint || "");
    var split = note.lastIndexOf("\n\n");
    check(split > 0, "Trädhuvudet har en signerad checkpoint.", "Checkpointen saknar signatur.");
    var text = note.slice(0, split + 1);
    var lines = text.split("\n");
    var origin = lines[0], size = Number(lines[1]), rootCp = b64(lines[2] || "");
    var keyHash = (await sha256(concat([enc.encode(origin), new Uint8Array([0x0a, 0x01]), pub]))).slice(0, 4);
    var sigs = note.slice(split + 2).split("\n").filter(function (l) { return l.length > 0; });
    var sig = null;
    sigs.forEach(function (l) {
      var m = /^\u2014 (\S+) (\S+)$/.exec(l);
      if (!m || m[1] !== origin) { return; }
      var raw = b64(m[2]);
      if (raw.length === 68 && same(raw.slice(0, 4), keyHash)) { sig = raw.slice(4); }
    });
    check(sig !== null, "Checkpointen har en signatur av nyckeln " + origin + "+" + hex(keyHash) + ".", "Checkpointen har ingen signatur av granskningsnyckeln.");
    var key;
    try {
      key = await crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
    } catch (e) {
      step("Webbläsaren kan inte Ed25519 i WebCrypto.", false);
      throw new Error("webbläsaren saknar Ed25519 i WebCrypto");
    }
    var sigOk = await crypto.subtle.verify({ name: "Ed25519" }, key, sig, enc.encode(text));
    check(sigOk, "Ed25519-signaturen över checkpointen stämmer.", "Ed25519-signaturen över checkpointen stämmer inte.");
    check(size === head.tree_size && hex(rootCp) === head.root_hash,
      "Checkpointen gäller trädet med " + size + " poster, rothash " + hex(rootCp).slice(0, 16) + "….",
      "Checkpointen och trädhuvudet säger olika saker.");

    var proof = await getJson("/v1/audit/proof/inclusion?seq=" + seq + "&tree_size=" + size);
    check(proof.leaf_index === seq - 1 && proof.tree_size === size, "Inkluderingsbeviset gäller post " + seq + " i trädet med " + size + " poster.", "Inkluderingsbeviset gäller fel post eller fel träd.");
    var path = (proof.hashes || []).map(unhex);
    var leafHash = await sha256(concat([new Uint8Array([0]), leaf]));
    var root;
    try {
      root = await rootFromInclusion(seq - 1, size, leafHash, path);
    } catch (e) {
      step("Inkluderingsbeviset går inte att räkna: " + e.message + ".", false);
      throw e;
    }
    check(same(root, rootCp), "Postens hash och beviset ger checkpointens rothash.", "Postens hash och beviset ger inte checkpointens rothash.");
    return size;
  }

  function run() {
    verify().then(function (size) {
      status.className = "status ok";
      status.textContent = "Verifierad här: posten ingår i den signerade loggen (" + size + " poster). Webbläsaren har själv kontrollerat beviset och signaturen.";
    }).catch(function (e) {
      status.className = "status failed";
      status.textContent = "Kontrollen misslyckades: " + (e && e.message ? e.message : "okänt fel") + ". Posten är inte verifierad.";
    });
  }
  if (again) { again.addEventListener("click", run); }
  run();
})();
