"""Render the published error-code table (docs/error-codes.md) from cim_schemas.errors."""

from __future__ import annotations

from cim_schemas.errors import ERROR_CODES

HEADER = """# amihub error codes

IEC 61968-100 leaves Reply/Error/code to implementations. These are amihub's.
A FAILED or PARTIAL reply carries one `Error` per failed item, with `code`,
`level`, `reason`, `details` and `ID` where they help. `details` starts with the
path of the offending element where there is one (local names, e.g.
`/GetMeterReadings/Request/GetMeterReadings/EndDevice[2]`, then any other detail in
brackets: `/CreatedMeterReadings/Payload/... (line 12)`); `Error/xpath` is never
used, as the official IEC 61968-100 Message.xsd types it `xs:QName`, which no path
is. `ID` names the failed object: its mRID (`kind="uuid"`) or its name
(`kind="name"`, `idType` = its NameType when one was given), with `objectType` its
CIM class (`EndDevice`, `Meter`, `UsagePoint`, `EndDeviceGroup`, ...). Codes are
stable: a code is never reused for another meaning. 1xxx concern the message as a whole (nothing is
applied), 2xxx an item inside the payload (the other items may be applied:
Result PARTIAL), 3xxx the system (retry later or ask the operator).

This file is generated from `cim_schemas/errors.py` (`python -m hub.error_table`); a
test keeps them in step.

| code | level | title | meaning |
|---|---|---|---|
"""


def render() -> str:
    rows = [f"| {e.code} | {e.level} | {e.title} | {e.meaning} |" for e in ERROR_CODES.values()]
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render(), end="")
