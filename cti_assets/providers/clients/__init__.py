"""One module per provider API: requests, answers into typed fields, errors."""
