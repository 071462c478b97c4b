"""Money: the double-entry ledger (``ledger``), its invariant checker (``check``), and the features built on
it (funds, escrow trades, banks, merchants)."""
