"""Search spaces as data: a declarative YAML/JSON format, validation with clear errors, built-in spaces."""

from search_spaces.format import SpaceError
from search_spaces.space import Space, builtin_names, builtin_path, from_document, load_space

__all__ = ["Space", "SpaceError", "builtin_names", "builtin_path", "from_document", "load_space"]
