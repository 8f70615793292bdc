"""FX rates: the bundled ECB history read in-process (`rates`), the Frankfurter HTTP client
(`client`) with its shared circuit breaker (`breaker`), their errors (`errors`), and the
`regional-etl fx-server` command (`server`)."""
