"""Every random value of an enveloped message, drawn by purpose (issue 9).

The encoder never calls a random number generator itself -- not OpenSSL's
either: it asks a :data:`Draw` function for octets under a label naming
their purpose.  The server passes draws derived from the view's identity
(:mod:`transcoder.transcoders.derivation`), so a message encrypts to the
same octets every time; :func:`system_draw` gives fresh ones.

Labels (``<i>`` is the recipient's position in the recipient list):

* ``cms/cek`` -- the content-encryption key;
* ``cms/iv`` -- the CBC IV or the GCM nonce;
* ``cms/recipient/<i>/rsa-pkcs1v15-ps/<r>`` -- round ``r`` of the nonzero
  padding string (RFC 8017 section 7.2.1);
* ``cms/recipient/<i>/rsa-oaep-seed`` -- the OAEP seed (RFC 8017 section 7.1.1);
* ``cms/recipient/<i>/ecdh-scalar`` -- the ephemeral ECDH private scalar.

No twisted import here.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from transcoder.cms.errors import CmsError

#: ``draw(label, size)``: ``size`` octets for the purpose ``label``.
Draw = Callable[[str, int], bytes]

CEK = "cms/cek"
IV = "cms/iv"


def system_draw(label: str, size: int) -> bytes:
    """Fresh octets from the operating system (the label is not used)."""
    return os.urandom(size)


def recipient_label(index: int, purpose: str) -> str:
    """The label of a per-recipient draw, e.g. ``cms/recipient/0/rsa-oaep-seed``."""
    return f"cms/recipient/{index}/{purpose}"


def draw_exactly(draw: Draw, label: str, size: int) -> bytes:
    """``draw(label, size)``, checked to be ``size`` octets (CmsError otherwise)."""
    value = draw(label, size)
    if not isinstance(value, bytes) or len(value) != size:
        raise CmsError(f"random source returned {len(value)} octets for {label}, {size} wanted")
    return value
