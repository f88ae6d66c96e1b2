"""The routing core, internal: which session and which proxy a request goes
through, and what a response or an error teaches about them.

Nothing here imports Scrapy or Twisted: time is a parameter or an injected
clock, and the Scrapy adapters (the middleware) translate requests,
responses and exceptions into the router's plain values and events.
"""
