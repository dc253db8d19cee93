"""Tests of the sans-IO CMS encoder (transcoder/cms/)."""
