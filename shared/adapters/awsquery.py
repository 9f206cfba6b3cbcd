"""SES and SNS through AWS's Query protocol, signed and sent by botocore, without a client.

A botocore client loads `endpoints.json` and its service's model when it is
created, most of it the endpoints of every AWS service: for SES and SNS that
was more than send_notifications' cold start could afford (docs: performance).
It calls four operations, whose Query form is fixed
(`Action`, `Version`, flattened parameters; an XML answer), so this sends them
with botocore's own pieces: the session's credential chain, SigV4 signing,
its urllib3 session. Errors raise botocore's `ClientError` with the code and
HTTP status the service answered, as a client would, and throttles, 5xx and
connection failures are tried three times, like the clients' "standard" mode.
"""

from __future__ import annotations

import random
import time
from functools import cache
from typing import TYPE_CHECKING, Any

from shared.adapters import aws
from shared.runtime.config import settings

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

# service -> (endpoint prefix, API version); the signing name is the service's.
SERVICES = {"ses": ("email", "2010-12-01"), "sns": ("sns", "2010-03-31")}
ATTEMPTS = 3
RETRY_CODES = frozenset({"Throttling", "ThrottlingException", "RequestThrottled",
                         "TooManyRequestsException", "ServiceUnavailable", "InternalFailure",
                         "InternalError", "RequestTimeout", "RequestTimeoutException"})


def flatten(prefix: str, value: Any, maps: frozenset[str] = frozenset()) -> dict[str, str]:
    """Query-protocol parameters: structures by `.`, lists as `.member.N`, maps as `.entry.N`."""
    if isinstance(value, dict) and prefix.rpartition(".")[2] in maps:
        out: dict[str, str] = {}
        for n, (key, item) in enumerate(value.items(), 1):
            out[f"{prefix}.entry.{n}.Name"] = str(key)
            out.update(flatten(f"{prefix}.entry.{n}.Value", item, maps))
        return out
    if isinstance(value, dict):
        return {k: v for name, item in value.items()
                for k, v in flatten(f"{prefix}.{name}" if prefix else name, item, maps).items()}
    if isinstance(value, list):
        return {k: v for n, item in enumerate(value, 1)
                for k, v in flatten(f"{prefix}.member.{n}", item, maps).items()}
    return {prefix: "true" if value is True else "false" if value is False else str(value)}


def _text(element: ET.Element | None, path: str) -> str:
    found = element.find(path) if element is not None else None
    return found.text or "" if found is not None else ""


class QueryClient:
    """The few SES and SNS operations send_notifications uses, with boto3's names and shapes."""

    def __init__(self, service: str) -> None:
        from botocore.httpsession import URLLib3Session

        self.service = service
        self.prefix, self.version = SERVICES[service]
        self._http = URLLib3Session(timeout=(5, 15))

    def call(self, action: str, params: dict[str, Any],
             maps: frozenset[str] = frozenset()) -> ET.Element:
        """Send `action` and return its `<ActionResult>` element, or raise ClientError."""
        from botocore.exceptions import BotoCoreError, ClientError

        body = {"Action": action, "Version": self.version, **flatten("", params, maps)}
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return self._send(action, body)
            except ClientError as exc:
                status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
                retry = exc.response["Error"]["Code"] in RETRY_CODES or status >= 500
                if not retry or attempt == ATTEMPTS:
                    raise
            except BotoCoreError:
                if attempt == ATTEMPTS:
                    raise
            time.sleep(random.random() * 0.1 * 2 ** attempt)
        raise AssertionError("unreachable")

    def _send(self, action: str, body: dict[str, str]) -> ET.Element:
        import xml.etree.ElementTree as ET

        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.exceptions import ClientError, NoCredentialsError

        cfg = settings()  # read per call, as tests point AWS_ENDPOINT_URL elsewhere
        url = cfg.aws_endpoint_url or f"https://{self.prefix}.{cfg.aws_region}.amazonaws.com"
        credentials = aws.session().get_credentials()
        if credentials is None:
            raise NoCredentialsError()
        request = AWSRequest("POST", url, data=body, headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        SigV4Auth(credentials.get_frozen_credentials(), self.service, cfg.aws_region
                  ).add_auth(request)
        answer = self._http.send(request.prepare())
        try:
            root = ET.fromstring(answer.content)
        except ET.ParseError:  # a proxy's page, say: its status decides
            root = ET.Element("Unreadable")
        if answer.status_code >= 300:
            error = root.find(".//{*}Error")
            raise ClientError({
                "Error": {"Code": _text(error, "{*}Code"), "Message": _text(error, "{*}Message"),
                          "Type": _text(error, "{*}Type")},
                "ResponseMetadata": {"HTTPStatusCode": answer.status_code,
                                     "RequestId": _text(root, ".//{*}RequestId")},
            }, action)
        result = root.find(f"{{*}}{action}Result")
        return result if result is not None else ET.Element(f"{action}Result")

    # --- the operations, as boto3 names and shapes them ------------------------------

    def send_email(self, **params: Any) -> dict[str, Any]:
        return {"MessageId": _text(self.call("SendEmail", params), "{*}MessageId")}

    def get_identity_verification_attributes(self, **params: Any) -> dict[str, Any]:
        result = self.call("GetIdentityVerificationAttributes", params)
        return {"VerificationAttributes": {
            _text(entry, "{*}key"): {"VerificationStatus": _text(entry, "{*}value/{*}"
                                                                 "VerificationStatus")}
            for entry in result.iterfind("{*}VerificationAttributes/{*}entry")}}

    def verify_email_identity(self, **params: Any) -> dict[str, Any]:
        self.call("VerifyEmailIdentity", params)
        return {}

    def publish(self, **params: Any) -> dict[str, Any]:
        result = self.call("Publish", params, maps=frozenset({"MessageAttributes"}))
        return {"MessageId": _text(result, "{*}MessageId")}


@cache
def client(service: str) -> QueryClient:
    """One per service and process; thread-safe (urllib3's pool, a fresh request per call)."""
    return QueryClient(service)
