"""JSON bodies as DRF parses them, minus what PostgreSQL cannot store: a string with a NUL
character anywhere in the document is a 400 parse error, not a database error later."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        if _has_nul(data):
            raise ParseError("JSON strings may not contain NUL characters (\\u0000).")
        return data


class YAMLParser(StrictJSONParser):
    """YAML documents (safe subset: plain data, no tags), held to the same NUL rule."""

    media_type = "application/yaml"

    def parse(self, stream, media_type=None, parser_context=None):
        import yaml

        try:
            data = yaml.safe_load(stream.read().decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ParseError(f"YAML parse error: {str(exc).splitlines()[0]}") from None
        if _has_nul(data):
            raise ParseError("YAML strings may not contain NUL characters.")
        return data


class TextYAMLParser(YAMLParser):
    media_type = "text/yaml"
