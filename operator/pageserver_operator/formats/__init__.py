"""Formats layer: pure, byte-exact models of the pageserver's names and files.

Modules (imported as modules, e.g. ``from pageserver_operator.formats import lsn``):
``errors`` (FormatError and its reasons), ``lsn``, ``ids``, ``layer_name``, ``generation``,
``metadata``, ``index_part``, ``tenant_config``.

Invariants of the whole layer: no file or network I/O, no imports from other layers of the
package (only the standard library and google_crc32c), every error is a ``FormatError``
(a ``ValueError``) with a CamelCase ``reason``, and every parser accepts only input whose
re-serialization is well-defined (names that round-trip exactly, files that re-encode).
"""
