"""The FX-rate service: ECB reference rates served over a Frankfurter-compatible HTTP API."""
