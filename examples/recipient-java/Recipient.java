/*
 * A minimal samgate recipient: the contract of docs/recipients.md in code.
 * JDK 17 only (Ed25519 is in the JDK), one file, run without compiling:
 *
 *   java Recipient.java serve --party region-kalmar --listen 127.0.0.1:9104 \
 *       --cert pki/region-kalmar-server.pem --key pki/region-kalmar-server.key \
 *       --client-ca pki/ca.pem --state-dir received \
 *       --gateway https://127.0.0.1:8443 --gateway-ca pki/ca.pem \
 *       --party-cert pki/region-kalmar.pem --party-key pki/region-kalmar.key
 *       # or, instead of --gateway...: --delivery-key keys/delivery.pub.pem
 *
 *   java Recipient.java verify --delivery-key keys/delivery.pub.pem \
 *       --body FILE --signature FILE        # exit 0 valid, 1 invalid
 *   java Recipient.java self-test --vector docs/test-vectors/delivery-signature.json
 *
 * For every delivery (mutual TLS: the gateway's client certificate must chain
 * to --client-ca) it:
 *  1. verifies Samgate-Signature, a detached JWS (RFC 7515 Appendix F) over
 *     the exact body bytes, with the gateway's delivery key from GET /v1/keys
 *     (fetched over mTLS with this party's certificate) or from
 *     keys/delivery.pub.pem;
 *  2. only then parses the body, checks that exchange_id equals the
 *     Samgate-Exchange-Id header and that "to" names this party;
 *  3. de-duplicates on exchange_id (delivery is at-least-once): a second
 *     delivery is answered as the first and not processed again;
 *  4. answers a reply {"type": ..., "payload": ...} (see answer()) or 204.
 *
 * The log (stdout) names exchange ids, types and parties, never a subject.
 * The JDK has no JSON parser, so a small one is at the end of this file.
 */

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpsConfigurator;
import com.sun.net.httpserver.HttpsParameters;
import com.sun.net.httpserver.HttpsServer;

import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.MessageDigest;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.Signature;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.spec.PKCS8EncodedKeySpec;
import java.security.spec.X509EncodedKeySpec;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.Executors;
import java.util.regex.Pattern;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.TrustManagerFactory;

public final class Recipient {
    static final String SIGNATURE_HEADER = "Samgate-Signature";
    static final String EXCHANGE_ID_HEADER = "Samgate-Exchange-Id";
    static final String JWS_TYP = "samgate-delivery";
    /** The gateway's payload limit is 1 MiB by default. */
    static final int MAX_BODY = 4 * 1024 * 1024;
    /** At most one JWKS fetch per 30 s for an unknown kid. */
    static final long REFETCH_NANOS = Duration.ofSeconds(30).toNanos();
    /** The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the raw key follows. */
    static final byte[] ED25519_SPKI_PREFIX = HexFormat.of().parseHex("302a300506032b6570032100");
    static final Pattern B64URL = Pattern.compile("^[A-Za-z0-9_-]*$");

    /** A delivery this recipient does not accept. */
    static final class Refused extends Exception {
        private static final long serialVersionUID = 1L;
        final int status;

        Refused(int status, String reason) {
            super(reason);
            this.status = status;
        }
    }

    public static void main(String[] argv) throws Exception {
        if (argv.length == 0 || !List.of("serve", "verify", "self-test").contains(argv[0])) {
            usage("the first argument is serve, verify or self-test");
        }
        Map<String, String> a = new HashMap<>();
        for (int i = 1; i < argv.length; i += 2) {
            if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
                usage("expected --name value pairs, got " + argv[i]);
            }
            a.put(argv[i].substring(2), argv[i + 1]);
        }
        switch (argv[0]) {
            case "serve" -> serve(a);
            case "verify" -> System.exit(verifyOffline(a));
            default -> System.exit(selfTest(a));
        }
    }

    static void usage(String why) {
        System.err.println("usage: java Recipient.java serve|verify|self-test --name value ...: " + why);
        System.exit(2);
    }

    static String need(Map<String, String> a, String name) {
        String v = a.get(name);
        if (v == null) {
            usage("--" + name + " is required");
        }
        return v;
    }

    static void log(String line) {
        System.out.println(line);
        System.out.flush();
    }

    // --- keys ----------------------------------------------------------------

    /** samgate's key id: the first 16 hex characters of SHA-256(raw key). */
    static String keyId(byte[] raw) throws GeneralSecurityException {
        return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(raw)).substring(0, 16);
    }

    static PublicKey ed25519FromRaw(byte[] raw) throws GeneralSecurityException {
        byte[] spki = new byte[ED25519_SPKI_PREFIX.length + raw.length];
        System.arraycopy(ED25519_SPKI_PREFIX, 0, spki, 0, ED25519_SPKI_PREFIX.length);
        System.arraycopy(raw, 0, spki, ED25519_SPKI_PREFIX.length, raw.length);
        return KeyFactory.getInstance("Ed25519").generatePublic(new X509EncodedKeySpec(spki));
    }

    /** keys/delivery.pub.pem (SPKI PEM) -> {kid: key}. */
    static Map<String, PublicKey> loadDeliveryPem(Path path) throws IOException, GeneralSecurityException {
        return deliveryKeysFromPem(Files.readString(path));
    }

    static Map<String, PublicKey> deliveryKeysFromPem(String pem) throws IOException, GeneralSecurityException {
        byte[] spki = pemSection(pem, "PUBLIC KEY");
        PublicKey key = KeyFactory.getInstance("Ed25519").generatePublic(new X509EncodedKeySpec(spki));
        byte[] raw = new byte[32];
        System.arraycopy(spki, spki.length - 32, raw, 0, 32);
        return Map.of(keyId(raw), key);
    }

    /**
     * The delivery keys of a JWKS from GET /v1/keys -> {kid: key}. The JWKS
     * also holds the audit key (samgate_purpose "audit"), which signs tree
     * heads, never deliveries: it is skipped.
     */
    static Map<String, PublicKey> parseJwks(Object document) throws GeneralSecurityException {
        Map<String, PublicKey> keys = new HashMap<>();
        if (!(document instanceof Map<?, ?> doc) || !(doc.get("keys") instanceof List<?> list)) {
            return keys;
        }
        for (Object o : list) {
            if (!(o instanceof Map<?, ?> jwk)) {
                continue;
            }
            if (!"OKP".equals(jwk.get("kty")) || !"Ed25519".equals(jwk.get("crv"))
                    || !"EdDSA".equals(orDefault(jwk.get("alg"), "EdDSA"))
                    || !"sig".equals(orDefault(jwk.get("use"), "sig"))
                    || !"delivery".equals(orDefault(jwk.get("samgate_purpose"), "delivery"))
                    || !(jwk.get("kid") instanceof String kid) || !(jwk.get("x") instanceof String x)) {
                continue;
            }
            byte[] raw = b64urlDecode(x);
            if (raw != null && raw.length == 32) {
                keys.put(kid, ed25519FromRaw(raw));
            }
        }
        return keys;
    }

    static Object orDefault(Object v, Object d) {
        return v == null ? d : v;
    }

    /**
     * The gateway's delivery keys by kid: fixed, or fetched from /v1/keys. An
     * unknown kid (the gateway rotated its delivery key) triggers a fresh
     * fetch, at most once per REFETCH_NANOS.
     */
    static final class DeliveryKeys {
        interface Fetch {
            Map<String, PublicKey> fetch() throws Exception;
        }

        private Map<String, PublicKey> keys;
        private final Fetch fetch;
        private Long fetchedAt;

        DeliveryKeys(Map<String, PublicKey> fixed, Fetch fetch) {
            this.keys = fixed == null ? Map.of() : fixed;
            this.fetch = fetch;
        }

        synchronized PublicKey get(String kid) throws Refused {
            PublicKey key = keys.get(kid);
            if (key != null || fetch == null) {
                return key;
            }
            long now = System.nanoTime();
            if (fetchedAt != null && now - fetchedAt < REFETCH_NANOS) {
                return null;
            }
            fetchedAt = now;
            try {
                keys = fetch.fetch();
            } catch (Exception e) {
                throw new Refused(503, "cannot fetch the gateway's keys: " + e);
            }
            log("fetched " + keys.size() + " delivery key(s) from the gateway: " + keys.keySet());
            return keys.get(kid);
        }
    }

    static DeliveryKeys.Fetch jwksFetcher(String gateway, Path ca, Path cert, Path key) throws Exception {
        HttpClient client = HttpClient.newBuilder()
                .sslContext(sslContext(cert, key, ca))
                .connectTimeout(Duration.ofSeconds(10))
                .build();
        URI uri = URI.create(gateway.replaceAll("/+$", "") + "/v1/keys");
        return () -> {
            HttpResponse<String> rsp = client.send(
                    HttpRequest.newBuilder(uri).timeout(Duration.ofSeconds(10)).GET().build(),
                    HttpResponse.BodyHandlers.ofString());
            if (rsp.statusCode() != 200) {
                throw new IOException("GET /v1/keys answered " + rsp.statusCode());
            }
            return parseJwks(Json.parse(rsp.body()));
        };
    }

    // --- TLS from the PEM files samgate init writes ---------------------------

    static byte[] pemSection(String pem, String label) throws IOException {
        String begin = "-----BEGIN " + label + "-----";
        String end = "-----END " + label + "-----";
        int b = pem.indexOf(begin);
        int e = pem.indexOf(end, b + 1);
        if (b < 0 || e < 0) {
            throw new IOException("no " + label + " section");
        }
        return Base64.getMimeDecoder().decode(pem.substring(b + begin.length(), e));
    }

    static PrivateKey readPrivateKey(Path path) throws IOException, GeneralSecurityException {
        // PKCS#8 ("BEGIN PRIVATE KEY"); the algorithm is the one that parses it.
        PKCS8EncodedKeySpec spec = new PKCS8EncodedKeySpec(pemSection(Files.readString(path), "PRIVATE KEY"));
        GeneralSecurityException last = null;
        for (String alg : new String[] {"EC", "Ed25519", "RSA"}) {
            try {
                return KeyFactory.getInstance(alg).generatePrivate(spec);
            } catch (GeneralSecurityException e) {
                last = e;
            }
        }
        throw new GeneralSecurityException(path + ": not an EC, Ed25519 or RSA PKCS#8 key", last);
    }

    static List<Certificate> readCertificates(Path path) throws IOException, GeneralSecurityException {
        try (InputStream in = Files.newInputStream(path)) {
            return new ArrayList<>(CertificateFactory.getInstance("X.509").generateCertificates(in));
        }
    }

    /** Our certificate and key (if any), trusting only the certificates in caFile. */
    static SSLContext sslContext(Path certFile, Path keyFile, Path caFile) throws Exception {
        char[] password = new char[0];
        KeyManagerFactory kmf = null;
        if (certFile != null) {
            KeyStore ks = KeyStore.getInstance("PKCS12");
            ks.load(null, null);
            ks.setKeyEntry("me", readPrivateKey(keyFile), password,
                    readCertificates(certFile).toArray(new Certificate[0]));
            kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            kmf.init(ks, password);
        }
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        int i = 0;
        for (Certificate c : readCertificates(caFile)) {
            trust.setCertificateEntry("ca" + i++, c);
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance("PKIX");
        tmf.init(trust);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(kmf == null ? null : kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        return ctx;
    }

    // --- the signature -------------------------------------------------------

    static byte[] b64urlDecode(String text) {
        if (!B64URL.matcher(text).matches()) {
            return null;
        }
        try {
            return Base64.getUrlDecoder().decode(text);
        } catch (IllegalArgumentException e) {
            return null;
        }
    }

    /**
     * Verifies the detached JWS over the exact body bytes and returns the
     * kid; Refused(401) for a signature that does not verify, 400 for one
     * that is malformed.
     */
    static String verifySignature(DeliveryKeys keys, String jws, byte[] body) throws Refused {
        String[] parts = jws == null ? new String[0] : jws.split("\\.", -1);
        if (parts.length != 3 || !parts[1].isEmpty()) {
            throw new Refused(400, "Samgate-Signature is not a detached compact JWS (header..signature)");
        }
        byte[] headerBytes = b64urlDecode(parts[0]);
        byte[] signature = b64urlDecode(parts[2]);
        if (headerBytes == null || signature == null) {
            throw new Refused(400, "Samgate-Signature is malformed: not base64url");
        }
        Object parsed;
        try {
            parsed = Json.parse(new String(headerBytes, StandardCharsets.UTF_8));
        } catch (IllegalArgumentException e) {
            throw new Refused(400, "the JWS header is not JSON");
        }
        if (!(parsed instanceof Map<?, ?> header)) {
            throw new Refused(400, "the JWS header is not a JSON object");
        }
        if (!"EdDSA".equals(header.get("alg")) || !JWS_TYP.equals(header.get("typ"))) {
            throw new Refused(401, "the JWS header must have alg EdDSA and typ samgate-delivery");
        }
        if (header.containsKey("crit") || !Boolean.TRUE.equals(orDefault(header.get("b64"), true))) {
            throw new Refused(401, "the JWS header asks for extensions this recipient does not know");
        }
        PublicKey key = header.get("kid") instanceof String kid ? keys.get(kid) : null;
        if (key == null) {
            throw new Refused(401, "unknown delivery key id " + header.get("kid"));
        }
        // RFC 7515 Appendix F: the signing input is the header and the
        // base64url of the body exactly as it arrived on the wire.
        String input = parts[0] + "." + Base64.getUrlEncoder().withoutPadding().encodeToString(body);
        try {
            Signature v = Signature.getInstance("Ed25519");
            v.initVerify(key);
            v.update(input.getBytes(StandardCharsets.US_ASCII));
            if (v.verify(signature)) {
                return (String) header.get("kid");
            }
        } catch (GeneralSecurityException e) {
            // a signature of the wrong length, for example: invalid
        }
        throw new Refused(401, "Samgate-Signature does not verify over this body");
    }

    // --- what this recipient does with a message -----------------------------

    /**
     * The reply to a verified, new message, or null for no reply (204). This
     * is where a real recipient hands the message to its own system. The
     * gateway treats a reply as a message from us back to the sender: it is
     * forwarded only if a route allows it (DESIGN §9 "Replies").
     */
    static Map<String, Object> answer(Map<?, ?> message) {
        Map<?, ?> payload = message.get("payload") instanceof Map<?, ?> p ? p : Map.of();
        Map<String, Object> reply = new LinkedHashMap<>();
        Map<String, Object> body = new LinkedHashMap<>();
        if ("referral".equals(message.get("type"))) {
            // The referral group's decision (the reverse route sfk-kalmar -> referrer).
            if (payload.get("referral_id") instanceof String id) {
                body.put("referral_id", id);
            }
            body.put("decision", "accepted");
            body.put("suggested_measure", "group-activity");
            reply.put("type", "referral");
        } else if ("rehabilitation-plan".equals(message.get("type"))) {
            // The team doctor's advice on a plan, as an interim assessment.
            body.put("stage", "interim");
            body.put("assessed_by_role", "doctor");
            body.put("functional_limitations",
                    List.of(Map.of("area", "attention-and-concentration", "severity", "mild")));
            body.put("further_care_needed", false);
            reply.put("type", "work-capacity-assessment");
        } else {
            return null;
        }
        reply.put("payload", body);
        return reply;
    }

    /**
     * DESIGN §13: the participant withdrew the consent this party received
     * data under. A real recipient now stops using that data (and follows its
     * own retention rules); this one records which exchanges are affected.
     */
    static void consentRevoked(Map<?, ?> message, Store store) throws IOException {
        Map<?, ?> fields = message.get("payload") instanceof Map<?, ?> p ? p : message;
        List<?> affected = fields.get("exchange_ids") instanceof List<?> l ? l : List.of();
        Map<String, Object> note = new LinkedHashMap<>();
        note.put("consent_id", fields.get("consent_id"));
        note.put("exchange_ids", affected);
        store.write("revoked-" + UUID.randomUUID() + ".json", Json.write(note).getBytes(StandardCharsets.UTF_8));
        log("consent revoked: consent_id " + fields.get("consent_id") + ", " + affected.size()
                + " exchange(s) affected");
    }

    // --- de-duplication ------------------------------------------------------

    /**
     * What was received, one directory entry per exchange_id, so that a second
     * delivery (after a gateway crash) is recognised across restarts:
     * {@code <id>.json} (the verified message, its signature and our answer)
     * and {@code <id>.body} (the body bytes exactly as received: the proof).
     */
    static final class Store {
        final Path dir;

        Store(Path dir) throws IOException {
            this.dir = Files.createDirectories(dir);
        }

        void write(String name, byte[] data) throws IOException {
            Path tmp = Files.createTempFile(dir, ".tmp-", "");
            Files.write(tmp, data);
            Files.move(tmp, dir.resolve(name), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        }

        /** The stored entry of an exchange, or null if it is new. */
        Map<?, ?> seen(String exchangeId) throws IOException {
            try {
                return (Map<?, ?>) Json.parse(Files.readString(dir.resolve(exchangeId + ".json")));
            } catch (NoSuchFileException e) {
                return null;
            }
        }

        void record(String exchangeId, byte[] body, String signature, Map<String, Object> reply) throws IOException {
            write(exchangeId + ".body", body);
            // The body is JSON already: it goes into the entry as it came.
            String entry = "{\"signature\":" + Json.write(signature)
                    + ",\"received_at\":" + Json.write(Instant.now().toString())
                    + ",\"reply\":" + Json.write(reply)
                    + ",\"message\":" + new String(body, StandardCharsets.UTF_8) + "}";
            write(exchangeId + ".json", entry.getBytes(StandardCharsets.UTF_8));
        }

        void duplicate(String exchangeId) throws IOException {
            Path p = dir.resolve(exchangeId + ".duplicates");
            int count = Files.exists(p) ? Integer.parseInt(Files.readString(p).trim()) : 0;
            write(exchangeId + ".duplicates", Integer.toString(count + 1).getBytes(StandardCharsets.UTF_8));
        }
    }

    /** One delivery -> the reply (or null). */
    static Object receive(String party, DeliveryKeys keys, Store store, HttpExchange ex, byte[] body)
            throws Refused, IOException {
        String signature = ex.getRequestHeaders().getFirst(SIGNATURE_HEADER);
        String kid = verifySignature(keys, signature, body);
        // Only authenticated bytes are parsed.
        Object parsed;
        try {
            parsed = Json.parse(new String(body, StandardCharsets.UTF_8));
        } catch (IllegalArgumentException e) {
            throw new Refused(400, "the body is not JSON");
        }
        if (!(parsed instanceof Map<?, ?> message)) {
            throw new Refused(400, "the body is not a JSON object");
        }
        if (!(message.get("exchange_id") instanceof String exchangeId) || !isUuid(exchangeId)) {
            throw new Refused(400, "exchange_id is not a UUID");
        }
        if (!exchangeId.equals(ex.getRequestHeaders().getFirst(EXCHANGE_ID_HEADER))) {
            throw new Refused(400, "Samgate-Exchange-Id does not match the body's exchange_id");
        }
        if (!party.equals(message.get("to"))) {
            // A genuine message for another party, replayed to us.
            throw new Refused(400, "the message is addressed to " + message.get("to") + ", not " + party);
        }
        Map<String, Object> reply;
        synchronized (store) {
            Map<?, ?> earlier = store.seen(exchangeId);
            if (earlier != null) {
                store.duplicate(exchangeId);
                log("duplicate " + exchangeId + ": answered as before, not processed again");
                return earlier.get("reply");
            }
            if ("consent-revoked".equals(message.get("type"))) {
                consentRevoked(message, store);
                reply = null;
            } else {
                reply = answer(message);
            }
            store.record(exchangeId, body, signature, reply);
        }
        String subjectKind = message.get("subject") instanceof Map<?, ?> s && !s.isEmpty()
                ? String.valueOf(s.keySet().iterator().next()) : "none";
        log("received " + exchangeId + ": " + message.get("type") + " from " + message.get("from")
                + ", subject as " + subjectKind + ", consent_id " + message.get("consent_id")
                + ", signature verified (kid " + kid + "), reply " + (reply == null ? "none" : reply.get("type")));
        return reply;
    }

    static boolean isUuid(String s) {
        try {
            return UUID.fromString(s).toString().equals(s);
        } catch (IllegalArgumentException e) {
            return false;
        }
    }

    // --- HTTPS ---------------------------------------------------------------

    static void send(HttpExchange ex, int status, Object document) throws IOException {
        if (document == null) {
            ex.sendResponseHeaders(status, -1);
        } else {
            byte[] data = Json.write(document).getBytes(StandardCharsets.UTF_8);
            ex.getResponseHeaders().set("Content-Type", "application/json");
            ex.sendResponseHeaders(status, data.length);
            ex.getResponseBody().write(data);
        }
        ex.close();
    }

    static void serve(Map<String, String> a) throws Exception {
        String party = need(a, "party");
        String path = a.getOrDefault("path", "/inbox");
        Path clientCa = Path.of(need(a, "client-ca"));
        DeliveryKeys keys;
        if (a.containsKey("delivery-key")) {
            keys = new DeliveryKeys(loadDeliveryPem(Path.of(a.get("delivery-key"))), null);
        } else {
            Path gatewayCa = a.containsKey("gateway-ca") ? Path.of(a.get("gateway-ca")) : clientCa;
            keys = new DeliveryKeys(null, jwksFetcher(need(a, "gateway"), gatewayCa,
                    Path.of(need(a, "party-cert")), Path.of(need(a, "party-key"))));
        }
        Store store = new Store(Path.of(need(a, "state-dir")));
        String listen = a.getOrDefault("listen", "127.0.0.1:0");
        int colon = listen.lastIndexOf(':');
        String host = listen.substring(0, colon);
        HttpsServer server = HttpsServer.create(
                new InetSocketAddress(host, Integer.parseInt(listen.substring(colon + 1))), 64);
        SSLContext tls = sslContext(Path.of(need(a, "cert")), Path.of(need(a, "key")), clientCa);
        server.setHttpsConfigurator(new HttpsConfigurator(tls) {
            @Override
            public void configure(HttpsParameters params) {
                SSLParameters p = getSSLContext().getDefaultSSLParameters();
                p.setNeedClientAuth(true); // only the gateway (a client cert from client-ca)
                p.setProtocols(new String[] {"TLSv1.3", "TLSv1.2"});
                params.setSSLParameters(p);
            }
        });
        server.createContext(path, ex -> {
            try (ex) {
                if (!"POST".equals(ex.getRequestMethod()) || !path.equals(ex.getRequestURI().getPath())) {
                    send(ex, 404, Map.of("error", "not found"));
                    return;
                }
                byte[] body = ex.getRequestBody().readNBytes(MAX_BODY + 1);
                if (body.length > MAX_BODY) {
                    send(ex, 413, Map.of("error", "body too large"));
                    return;
                }
                Object reply;
                try {
                    reply = receive(party, keys, store, ex, body);
                } catch (Refused e) {
                    log("refused (" + e.status + "): " + e.getMessage());
                    send(ex, e.status, Map.of("error", e.getMessage()));
                    return;
                } catch (RuntimeException | IOException e) {
                    // our own fault: the gateway retries async deliveries
                    log("internal error: " + e.getClass().getSimpleName());
                    send(ex, 500, Map.of("error", "internal error"));
                    return;
                }
                if (reply == null) {
                    send(ex, 204, null);
                } else {
                    send(ex, 200, reply);
                }
            }
        });
        server.setExecutor(Executors.newFixedThreadPool(8));
        server.start();
        int bound = server.getAddress().getPort();
        if (a.containsKey("port-file")) {
            Path pf = Path.of(a.get("port-file"));
            Path tmp = Path.of(pf + ".tmp");
            Files.writeString(tmp, bound + "\n");
            Files.move(tmp, pf, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        }
        log("recipient " + party + " listening on https://" + host + ":" + bound + path);
    }

    /** Offline: does this signature verify over this body with this key? */
    static int verifyOffline(Map<String, String> a) throws Exception {
        DeliveryKeys keys = new DeliveryKeys(loadDeliveryPem(Path.of(need(a, "delivery-key"))), null);
        byte[] body = Files.readAllBytes(Path.of(need(a, "body")));
        String signature = need(a, "signature");
        if (Files.exists(Path.of(signature))) {
            signature = Files.readString(Path.of(signature)).trim();
        }
        try {
            System.out.println("signature valid (kid " + verifySignature(keys, signature, body) + ")");
            return 0;
        } catch (Refused e) {
            System.out.println("signature invalid: " + e.getMessage());
            return 1;
        }
    }

    /**
     * The published vector (docs/test-vectors/delivery-signature.json): the
     * genuine body verifies with the key from PEM and from the JWK; a tampered
     * body, a changed header and the audit key's JWK do not pass.
     */
    static int selfTest(Map<String, String> a) throws Exception {
        Map<?, ?> v = (Map<?, ?>) Json.parse(Files.readString(Path.of(need(a, "vector")), StandardCharsets.UTF_8));
        String kid = (String) v.get("kid");
        String jws = (String) v.get("samgate_signature");
        byte[] body = ((String) v.get("body")).getBytes(StandardCharsets.UTF_8);
        byte[] tampered = ((String) v.get("tampered_body")).getBytes(StandardCharsets.UTF_8);
        Map<String, PublicKey> fromPem = deliveryKeysFromPem((String) v.get("public_key_pem"));
        Map<String, Object> auditJwk = new LinkedHashMap<>();
        ((Map<?, ?>) v.get("jwk")).forEach((k, val) -> auditJwk.put(String.valueOf(k), val));
        auditJwk.put("samgate_purpose", "audit");
        auditJwk.put("kid", "audit-key");
        Map<String, PublicKey> fromJwks = parseJwks(Map.of("keys", List.of(v.get("jwk"), auditJwk)));
        String[] parts = jws.split("\\.", -1);
        String noneHeader = Base64.getUrlEncoder().withoutPadding().encodeToString(
                ("{\"alg\":\"none\",\"kid\":\"" + kid + "\",\"typ\":\"" + JWS_TYP + "\"}")
                        .getBytes(StandardCharsets.UTF_8));
        String attached = parts[0] + "." + Base64.getUrlEncoder().withoutPadding().encodeToString(body) + "." + parts[2];
        java.security.KeyPairGenerator gen = java.security.KeyPairGenerator.getInstance("Ed25519");
        Map<String, PublicKey> other = Map.of(kid, gen.generateKeyPair().getPublic());
        int failures = 0;
        failures += expect("the PEM key's kid is the vector's", fromPem.keySet().equals(java.util.Set.of(kid)));
        failures += expect("the JWKS yields the delivery key only", fromJwks.keySet().equals(java.util.Set.of(kid)));
        failures += expect("the genuine body verifies (PEM)", refused(fromPem, jws, body) == 0);
        failures += expect("the genuine body verifies (JWKS)", refused(fromJwks, jws, body) == 0);
        failures += expect("a tampered body is refused (401)", refused(fromPem, jws, tampered) == 401);
        failures += expect("alg none is refused (401)", refused(fromPem, noneHeader + ".." + parts[2], body) == 401);
        failures += expect("an attached (non-detached) JWS is refused (400)", refused(fromPem, attached, body) == 400);
        failures += expect("a signature by another key is refused (401)", refused(other, jws, body) == 401);
        System.out.println("self-test " + (failures == 0 ? "passed" : "FAILED: " + failures + " check(s)"));
        return failures == 0 ? 0 : 1;
    }

    static int expect(String what, boolean ok) {
        System.out.println("  " + (ok ? "ok" : "FAILED") + "  " + what);
        return ok ? 0 : 1;
    }

    /** The status a delivery with this signature would get (0: accepted). */
    static int refused(Map<String, PublicKey> keys, String jws, byte[] body) {
        try {
            verifySignature(new DeliveryKeys(keys, null), jws, body);
            return 0;
        } catch (Refused e) {
            return e.status;
        }
    }

    // --- JSON (RFC 8259): objects, arrays, strings, numbers, true, false, null -

    static final class Json {
        private final String s;
        private int i;

        private Json(String s) {
            this.s = s;
        }

        /** Parses one JSON value; IllegalArgumentException if it is not JSON. */
        static Object parse(String text) {
            Json p = new Json(text);
            p.space();
            Object v = p.value(0);
            p.space();
            if (p.i != p.s.length()) {
                throw p.error("trailing characters");
            }
            return v;
        }

        private IllegalArgumentException error(String what) {
            return new IllegalArgumentException("JSON: " + what + " at " + i);
        }

        private void space() {
            while (i < s.length() && " \t\r\n".indexOf(s.charAt(i)) >= 0) {
                i++;
            }
        }

        private Object value(int depth) {
            if (depth > 64) {
                throw error("nested too deeply");
            }
            if (i >= s.length()) {
                throw error("unexpected end");
            }
            char c = s.charAt(i);
            switch (c) {
                case '{': {
                    i++;
                    Map<String, Object> m = new LinkedHashMap<>();
                    space();
                    if (peek('}')) {
                        return m;
                    }
                    do {
                        space();
                        if (i >= s.length() || s.charAt(i) != '"') {
                            throw error("expected a key");
                        }
                        String k = string();
                        space();
                        expect(':');
                        space();
                        if (m.put(k, value(depth + 1)) != null) {
                            throw error("duplicate key");
                        }
                        space();
                    } while (peek(','));
                    expect('}');
                    return m;
                }
                case '[': {
                    i++;
                    List<Object> l = new ArrayList<>();
                    space();
                    if (peek(']')) {
                        return l;
                    }
                    do {
                        space();
                        l.add(value(depth + 1));
                        space();
                    } while (peek(','));
                    expect(']');
                    return l;
                }
                case '"':
                    return string();
                case 't':
                    return literal("true", Boolean.TRUE);
                case 'f':
                    return literal("false", Boolean.FALSE);
                case 'n':
                    return literal("null", null);
                default:
                    return number();
            }
        }

        private boolean peek(char c) {
            if (i < s.length() && s.charAt(i) == c) {
                i++;
                return true;
            }
            return false;
        }

        private void expect(char c) {
            if (!peek(c)) {
                throw error("expected '" + c + "'");
            }
        }

        private Object literal(String word, Object v) {
            if (!s.startsWith(word, i)) {
                throw error("unknown literal");
            }
            i += word.length();
            return v;
        }

        private Object number() {
            java.util.regex.Matcher m = Pattern.compile("-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?")
                    .matcher(s).region(i, s.length());
            if (!m.lookingAt()) {
                throw error("unexpected character");
            }
            i = m.end();
            return new java.math.BigDecimal(m.group());
        }

        private String string() {
            expect('"');
            StringBuilder b = new StringBuilder();
            while (true) {
                if (i >= s.length()) {
                    throw error("unterminated string");
                }
                char c = s.charAt(i++);
                if (c == '"') {
                    return b.toString();
                }
                if (c < 0x20) {
                    throw error("control character in string");
                }
                if (c != '\\') {
                    b.append(c);
                    continue;
                }
                if (i >= s.length()) {
                    throw error("unterminated escape");
                }
                char e = s.charAt(i++);
                switch (e) {
                    case '"', '\\', '/' -> b.append(e);
                    case 'b' -> b.append('\b');
                    case 'f' -> b.append('\f');
                    case 'n' -> b.append('\n');
                    case 'r' -> b.append('\r');
                    case 't' -> b.append('\t');
                    case 'u' -> {
                        if (i + 4 > s.length()) {
                            throw error("short \\u escape");
                        }
                        try {
                            b.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
                        } catch (NumberFormatException x) {
                            throw error("bad \\u escape");
                        }
                        i += 4;
                    }
                    default -> throw error("bad escape");
                }
            }
        }

        /** Serialises maps, lists, strings, numbers, booleans and null. */
        static String write(Object v) {
            StringBuilder b = new StringBuilder();
            write(v, b);
            return b.toString();
        }

        private static void write(Object v, StringBuilder b) {
            if (v == null) {
                b.append("null");
            } else if (v instanceof String str) {
                b.append('"');
                for (char c : str.toCharArray()) {
                    switch (c) {
                        case '"' -> b.append("\\\"");
                        case '\\' -> b.append("\\\\");
                        case '\n' -> b.append("\\n");
                        case '\r' -> b.append("\\r");
                        case '\t' -> b.append("\\t");
                        default -> {
                            if (c < 0x20) {
                                b.append(String.format("\\u%04x", (int) c));
                            } else {
                                b.append(c);
                            }
                        }
                    }
                }
                b.append('"');
            } else if (v instanceof Map<?, ?> m) {
                b.append('{');
                boolean first = true;
                for (Map.Entry<?, ?> e : m.entrySet()) {
                    if (!first) {
                        b.append(',');
                    }
                    first = false;
                    write(String.valueOf(e.getKey()), b);
                    b.append(':');
                    write(e.getValue(), b);
                }
                b.append('}');
            } else if (v instanceof List<?> l) {
                b.append('[');
                for (int k = 0; k < l.size(); k++) {
                    if (k > 0) {
                        b.append(',');
                    }
                    write(l.get(k), b);
                }
                b.append(']');
            } else if (v instanceof java.math.BigDecimal || v instanceof Integer || v instanceof Long
                    || v instanceof Boolean) {
                b.append(v);
            } else {
                throw new IllegalArgumentException("cannot write " + v.getClass());
            }
        }
    }
}
