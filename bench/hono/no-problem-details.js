// hono-idempotency imports the optional package `hono-problem-details` lazily and
// falls back to its own problem+json when the import fails; wrangler's bundler
// needs the name resolved, so it is aliased here to a module whose import fails.
throw new Error("hono-problem-details is not installed");
