"""Schemathesis checks for Tally (loaded with SCHEMATHESIS_HOOKS=tally_checks).

`positive_data_acceptance_of_the_document` is schemathesis' positive_data_acceptance
(a request the document calls valid is not refused with 400 or 422) less the refusals
that depend on what the log holds or on two parameters together, which an OpenAPI
document cannot state; the route descriptions state them:

- 422 `refund_not_allowed`: the spend named has less left to refund (API.md's code);
- 422 `capture_exceeds_hold`: the hold holds less (API.md's code);
- 422 `url_not_allowed`: a webhook URL that the URL standard does not parse, DNS does
  not resolve, or resolves to a private address (what DNS says, not the document);
- 422 `position_range`: a replay's from_position after its to_position (two together);
- 422 `validation` "give at or at_position, not both": the two exclude each other.

Any other 400 or 422 to a schema-valid request fails the run.
"""

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

STATE_CODES = {"refund_not_allowed", "capture_exceeds_hold", "url_not_allowed", "position_range"}
EXCLUSIVE = "give at or at_position, not both"


def _problem(response):
    try:
        body = response.json()
    except Exception:
        return {}
    return body if isinstance(body, dict) else {}


@schemathesis.check
def positive_data_acceptance_of_the_document(ctx, response, case):
    if response.status_code == 422:
        problem = _problem(response)
        if problem.get("code") in STATE_CODES:
            return None
        if problem.get("code") == "validation" and problem.get("detail") == EXCLUSIVE:
            return None
    return positive_data_acceptance(ctx, response, case)
