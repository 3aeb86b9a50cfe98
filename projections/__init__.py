"""Read models built from the event log: the ledger, overdue and accountability views."""
