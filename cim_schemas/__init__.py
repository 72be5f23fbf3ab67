"""amihub's own XSDs for the IEC 61968-100 envelope and the 61968-9 profiles,
typed parse/render pairs for them, and the part 9 code tables (see docs/cim.md).

Modules: :mod:`.namespaces`, :mod:`.schemas` (the cached validator),
:mod:`.envelope`, :mod:`.profiles`, :mod:`.codes`, :mod:`.values`, and
:mod:`.xml` (the one hardened XML parser). Importing builds nothing.
"""
