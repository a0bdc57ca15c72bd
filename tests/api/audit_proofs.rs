//! Proofs from the auditor API and the register extract (DESIGN §6, §9).

use samgate::audit::merkle::{self, Hash};
use samgate::audit::proof;
use serde_json::Value;

use crate::audit::{assert_no_pnr, hash_hex, leaf_of, record_consent, seed, seeded, walk, PNR_A};
use crate::both_backends;
use crate::harness::{Rsp, TestGateway};

/// The `hashes` of a proof answer.
fn hashes_of(proof: &Value) -> Vec<Hash> {
    proof["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hash_hex(h.as_str().unwrap()))
        .collect()
}

both_backends!(
    proofs_from_the_api_verify_against_the_signed_head,
    |db| async move {
        let (gw, c) = seeded(db, 9).await;
        let head1 = c.get("/v1/audit/tree-head").await.json();
        let size1 = head1["tree_size"].as_u64().unwrap();
        assert_eq!(size1, 10, "the head covers the query's own record");
        seed(&gw, 14).await;
        let head2 = c.get("/v1/audit/tree-head").await.json();
        let size2 = head2["tree_size"].as_u64().unwrap();
        assert_eq!(size2, 25);
        let root2 = hash_hex(head2["root_hash"].as_str().unwrap());
        // The checkpoint states the same size and root under the audit key.
        let key = samgate::keys::load_public_key_pem(&gw.path("keys/audit.pub.pem")).unwrap();
        let origin = format!("samgate/{}", gw.config.server.deployment_id);
        let cp = samgate::audit::checkpoint::Checkpoint::open(
            head2["checkpoint"].as_str().unwrap(),
            &origin,
            &key.raw.clone().try_into().unwrap(),
        )
        .unwrap();
        assert_eq!((cp.tree_size, cp.root_hash), (size2, root2));
        let all = walk(&c, "/v1/audit/records?limit=1000").await;
        for seq in 1..=size2 {
            let rsp = c
                .get(&format!(
                    "/v1/audit/proof/inclusion?seq={seq}&tree_size={size2}"
                ))
                .await;
            assert_eq!(rsp.status, 200, "{}", rsp.text);
            let j = rsp.json();
            assert_eq!(j["leaf_index"], seq - 1);
            assert_eq!(j["tree_size"], size2);
            let hashes = hashes_of(&j);
            let leaf = merkle::leaf_hash(&leaf_of(&all[(seq - 1) as usize]));
            proof::verify_inclusion(&leaf, seq - 1, size2, &hashes, &root2).unwrap();
        }
        let rsp = c
            .get(&format!(
                "/v1/audit/proof/consistency?first={size1}&second={size2}"
            ))
            .await;
        let j = rsp.json();
        assert_eq!(
            (j["first"].as_u64(), j["second"].as_u64()),
            (Some(size1), Some(size2))
        );
        let hashes = hashes_of(&j);
        let root1 = hash_hex(head1["root_hash"].as_str().unwrap());
        proof::verify_consistency(size1, size2, &root1, &root2, &hashes).unwrap();
        let over = 1_000_000;
        let cases: Vec<(String, u16)> = vec![
            ("inclusion?seq=0&tree_size=3".into(), 400),
            ("inclusion?seq=x&tree_size=3".into(), 400),
            ("inclusion?seq=1".into(), 400),
            ("inclusion?seq=4&tree_size=3".into(), 404),
            (format!("inclusion?seq=1&tree_size={over}"), 404),
            ("consistency?first=5&second=3".into(), 400),
            ("consistency?first=1&second=+3".into(), 400),
            (format!("consistency?first=1&second={over}"), 404),
        ];
        for (q, status) in cases {
            let rsp: Rsp = c.get(&format!("/v1/audit/proof/{q}")).await;
            assert_eq!(rsp.status, status, "{q}: {}", rsp.text);
            assert_eq!(
                rsp.problem(),
                if status == 400 {
                    "invalid_envelope"
                } else {
                    "not_found"
                }
            );
        }
    }
);

both_backends!(
    disclosures_list_the_exchanges_about_a_person_newest_first,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        let a = gw.audit_pseudonym(PNR_A);
        record_consent(&gw, PNR_A).await;
        seed(&gw, 9).await;
        let intake = gw.client("sfk-kalmar");
        let rsp = intake.disclosures("20020314-9828").await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        assert_no_pnr(&rsp.text);
        let j = rsp.json();
        assert_eq!(j["subject"], a.as_str());
        let list = j["disclosures"].as_array().unwrap();
        let all = walk(&gw.auditor(), "/v1/audit/records?limit=1000").await;
        let mut want: Vec<&Value> = all
            .iter()
            .filter(|r| {
                r["subject"] == a.as_str() && r["action"].as_str().unwrap().starts_with("exchange-")
            })
            .collect();
        want.reverse();
        assert_eq!(list.len(), want.len());
        assert!(!list.is_empty());
        for (d, r) in list.iter().zip(want) {
            for k in [
                "exchange_id",
                "time",
                "from",
                "to",
                "type",
                "purpose",
                "forwarded",
                "consent_id",
                "decision",
            ] {
                assert_eq!(d[k], r[k], "{k}");
            }
        }
        let logged = walk(&gw.auditor(), "/v1/audit/records?action=disclosure").await;
        assert_eq!(logged.len(), 1);
        assert_eq!(logged[0]["subject"], a.as_str());
        assert_eq!(logged[0]["actor_party"], "sfk-kalmar");
        let rsp = intake.disclosures("20020314-9829").await;
        assert_eq!(rsp.problem_code(), (422, "invalid_personnummer"));
        assert!(!rsp.text.contains("20020314-9829"));
        let rsp = gw.client("fk").disclosures(PNR_A).await;
        assert_eq!(rsp.problem(), "forbidden_role");
    }
);
