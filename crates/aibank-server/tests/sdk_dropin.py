"""Drop-in check: the official Anthropic, OpenAI and Google Gen AI Python SDKs, pointed at
the gateway, work unchanged. Run by tests/sdk_dropin.rs with AIBANK_GATEWAY and AIBANK_KEY set."""
import os
import sys

import anthropic
import openai
from google import genai
from google.genai import types

gateway, key = os.environ["AIBANK_GATEWAY"], os.environ["AIBANK_KEY"]
a = anthropic.Anthropic(api_key=key, base_url=f"{gateway}/v1/gateway/anthropic", max_retries=0)
o = openai.OpenAI(api_key=key, base_url=f"{gateway}/v1/gateway/openai/v1", max_retries=0)
msgs = [{"role": "user", "content": "hi"}]

m = a.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=msgs)
assert (m.content[0].text, m.usage.input_tokens, m.usage.output_tokens) == ("Hello from mock", 11, 7), m
with a.messages.stream(model="claude-sonnet-4-5", max_tokens=50, messages=msgs) as s:
    text = "".join(s.text_stream)
    assert (text, s.get_final_message().usage.output_tokens) == ("Hello from mock", 7)
c = o.chat.completions.create(model="gpt-4o-mini", messages=msgs)
assert (c.choices[0].message.content, c.usage.total_tokens) == ("Hello from mock", 18), c
chunks = list(o.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True))
assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "Hello from mock"
r = o.responses.create(model="gpt-4o-mini", input="hi", max_output_tokens=50)
assert (r.output_text, r.usage.input_tokens, r.usage.output_tokens) == ("Hello from mock", 11, 7), r
events = list(o.responses.create(model="gpt-4o-mini", input="hi", max_output_tokens=50, stream=True))
done = [e for e in events if e.type == "response.completed"]
assert len(done) == 1 and done[0].response.usage.output_tokens == 7, events
assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hello from mock"
e = o.embeddings.create(model="text-embedding-3-small", input="hi")
assert e.usage.prompt_tokens == 11 and len(e.data) == 1, e
w = a.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=msgs,
                      tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
                      extra_headers={"x-mock-web-searches": "2"})
assert w.usage.server_tool_use.web_search_requests == 2, w
g = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=f"{gateway}/v1/gateway/gemini"))
r = g.models.generate_content(model="gemini-2.5-flash", contents="hi")
assert (r.text, r.usage_metadata.candidates_token_count) == ("Hello from mock", 7), r
text = "".join(c.text or "" for c in g.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))
assert text == "Hello from mock", text
try:
    a.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=msgs,
                      extra_headers={"x-mock-behavior": "error-429"})
    sys.exit("expected a rate-limit error")
except anthropic.RateLimitError:
    pass
print("sdk drop-in ok")
