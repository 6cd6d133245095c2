"""The OpenAI-compatible HTTP endpoint over the coordinator (serve --http): requests in, replies out."""
