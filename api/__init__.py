"""HTTP-facing types and apps of the AskDB service (the contract is ../shared/API.md)."""
