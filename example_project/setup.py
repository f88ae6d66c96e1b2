"""Packaging for scrapyd-deploy: the egg holds the demo project only.
scrapy-sticky-proxy itself must be installed where Scrapyd runs."""

from setuptools import find_packages, setup

setup(
    name="demo",
    version="1.0",
    packages=find_packages(),
    entry_points={"scrapy": ["settings = demo.settings"]},
)
