-- Witness cosignatures of signed tree heads (DESIGN §12): one C2SP tlog-cosignature
-- line per (tree size, witness), verified before it is stored.
CREATE TABLE tree_head_cosignatures (
    tree_size   BIGINT NOT NULL,
    witness     TEXT   NOT NULL,
    cosignature TEXT   NOT NULL,
    timestamp   BIGINT NOT NULL,
    PRIMARY KEY (tree_size, witness)
);
CREATE INDEX tree_head_cosignatures_witness ON tree_head_cosignatures (witness, tree_size);
