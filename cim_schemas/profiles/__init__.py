"""Typed parse/render pairs for the IEC 61968-9 profiles amihub speaks.

One module per profile: frozen dataclasses that mirror the profile, a
``parse_<noun>(element)`` and a ``render_<noun>(obj)`` returning the profile's
root element (in its ``http://iec.ch/TC57/2011/<Noun>#`` namespace).
Parsers expect a schema-valid element and raise
:class:`hub.errors.PayloadInvalid` (with the element's xpath and the published
error code) for values they cannot use: a timestamp without zone, a value
that is not a decimal.
"""
