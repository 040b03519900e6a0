"""Errors of the wire contract.

Every error carries a stable machine `code` that ends up in an error result
or a DLQ header, and a message that names the fix.

    WireError                      code
    ├── DecodeError                msgpack_format   bytes are not a msgpack map
    ├── UnsupportedSchemaError     schema_version   sg-schema header we cannot read
    ├── SchemaValidationError      schema           fields missing / wrong type
    ├── OverLimitError             over_limit       message, image or text too large
    │   └── ImageBombError         image_bomb       too many pixels in an image header
    ├── InvalidImageError          invalid_image    image header unreadable, sha256 mismatch
    │   ├── UnsupportedImageError  unsupported_image_format  a format outside the allow-list
    │   └── ImageOutsideRootError  image_outside_root        file:// path outside the allowed root
    ├── InvalidInputError          invalid_input    inputs do not fit the model
    └── UnknownModelError          unknown_model    no such model in the catalog
"""

from __future__ import annotations

from typing import ClassVar


class WireError(ValueError):
    """Root of the errors raised while decoding or admitting a request."""

    code: ClassVar[str] = "wire_error"
    # Retrying the same bytes never helps: the producer must fix them.
    retriable: ClassVar[bool] = False


class DecodeError(WireError):
    code = "msgpack_format"


class UnsupportedSchemaError(WireError):
    code = "schema_version"


class SchemaValidationError(WireError):
    code = "schema"


class OverLimitError(WireError):
    code = "over_limit"


class ImageBombError(OverLimitError):
    code = "image_bomb"


class InvalidImageError(WireError):
    code = "invalid_image"


class UnsupportedImageError(InvalidImageError):
    code = "unsupported_image_format"


class ImageOutsideRootError(InvalidImageError):
    code = "image_outside_root"


class InvalidInputError(WireError):
    code = "invalid_input"


class UnknownModelError(WireError):
    code = "unknown_model"
