"""A small, strict SIP user agent core (RFC 3261): messages, transactions, dialogs, digest auth."""
