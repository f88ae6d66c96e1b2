"""The demo project: crawls the offline sandbox through the sandbox gateway.

Run it from this folder with ``scrapy crawl demo``. Nothing leaves this
machine: the gateway and the demo site both listen on 127.0.0.1, and each
proxy session gets its own exit address in 127.0.0.0/8.
"""

import os

# Scrapy's CookiesMiddleware checks cookie domains against the Public Suffix
# List, which tldextract downloads from publicsuffix.org the first time a
# site sets a cookie (demo_pool's does). Empty: the copy tldextract ships
# with, nothing fetched. A real project can leave this out.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

BOT_NAME = "demo"
SPIDER_MODULES = ["demo.spiders"]
NEWSPIDER_MODULE = "demo.spiders"

ADDONS = {"scrapy_sticky_proxy.Addon": 100}

# The offline sandbox: a gateway and a demo site started inside this process.
STICKY_PROXY_PROVIDER = "sandbox"
# A real user changes these two lines, for example for PacketStream:
# STICKY_PROXY_PROVIDER = "packetstream"
# STICKY_PROXY_URL = "http://USER:PASSWORD@proxy.packetstream.io:31112"
# (or leave STICKY_PROXY_URL out of settings.py and export it as an
# environment variable of the same name, so it never lands in the project.)

STICKY_PROXY_KEY = "url"  # every item page gets its own exit...
STICKY_PROXY_MAX_REROLLS = 5
STICKY_PROXY_BAN_PATTERNS = [r"g-recaptcha"]  # captcha pages served with 200
STICKY_PROXY_GAVE_UP_FILE = "gave_up.jsonl"
STICKY_PROXY_LOG_INTERVAL = 10

# The demo site bans this share of exit addresses (403, 429 or a captcha).
DEMO_ITEMS = 50
DEMO_BAN_FRACTION = 0.2

ROBOTSTXT_OBEY = False
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 16
DOWNLOAD_TIMEOUT = 20
LOG_LEVEL = "INFO"
FEEDS = {"items.jsonl": {"format": "jsonlines", "overwrite": True}}
