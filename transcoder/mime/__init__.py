"""Sans-IO MIME layer (see docs/design.md, "Layers"): entity splitting with byte offsets.

No twisted import anywhere below this package.
"""

from transcoder.mime.entity import (
    DIGEST_DEFAULT,
    ContentType,
    Entity,
    HeaderField,
    content_type,
    parse_message,
)
from transcoder.mime.headers import (
    Address,
    parse_address_list,
    parse_disposition,
    parse_media_type,
)

__all__ = [
    "DIGEST_DEFAULT",
    "Address",
    "ContentType",
    "Entity",
    "HeaderField",
    "content_type",
    "parse_address_list",
    "parse_disposition",
    "parse_media_type",
    "parse_message",
]
