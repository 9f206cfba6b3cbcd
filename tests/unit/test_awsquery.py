"""SES and SNS over the Query protocol: parameters flattened as AWS expects, answers parsed,
errors raised as botocore's ClientError, transient ones retried (moto covers the rest)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError

from shared.adapters import awsquery

SES = "http://ses.amazonaws.com/doc/2010-12-01/"


def test_structures_lists_and_maps_are_flattened() -> None:
    params = {"Source": "a@b.c", "Destination": {"ToAddresses": ["x@y.z", "w@y.z"]},
              "Message": {"Subject": {"Data": "Hi", "Charset": "UTF-8"}},
              "MessageAttributes": {"AWS.SNS.SMS.SMSType": {"DataType": "String",
                                                            "StringValue": "Transactional"}}}
    assert awsquery.flatten("", params, frozenset({"MessageAttributes"})) == {
        "Source": "a@b.c",
        "Destination.ToAddresses.member.1": "x@y.z",
        "Destination.ToAddresses.member.2": "w@y.z",
        "Message.Subject.Data": "Hi",
        "Message.Subject.Charset": "UTF-8",
        "MessageAttributes.entry.1.Name": "AWS.SNS.SMS.SMSType",
        "MessageAttributes.entry.1.Value.DataType": "String",
        "MessageAttributes.entry.1.Value.StringValue": "Transactional",
    }


@dataclass
class Answer:
    status_code: int
    content: bytes


class FakeHttp:
    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.bodies: list[str] = []

    def send(self, request: Any) -> Answer:
        self.bodies.append(str(request.body))
        return self.answers.pop(0)


def ses(*answers: Answer, monkeypatch: pytest.MonkeyPatch) -> tuple[awsquery.QueryClient,
                                                                      FakeHttp]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.setattr(awsquery.time, "sleep", lambda _: None)
    client = awsquery.QueryClient("ses")
    http = FakeHttp(*answers)
    client._http = http  # type: ignore[assignment]
    return client, http


def error(code: str) -> bytes:
    return (f'<ErrorResponse xmlns="{SES}"><Error><Type>Sender</Type><Code>{code}</Code>'
            f"<Message>no</Message></Error><RequestId>r1</RequestId></ErrorResponse>").encode()


def test_answers_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    client, http = ses(
        Answer(200, f'<SendEmailResponse xmlns="{SES}"><SendEmailResult><MessageId>m-1'
                    f"</MessageId></SendEmailResult></SendEmailResponse>".encode()),
        Answer(200, f'<GetIdentityVerificationAttributesResponse xmlns="{SES}">'
                    "<GetIdentityVerificationAttributesResult><VerificationAttributes><entry>"
                    "<key>b.c</key><value><VerificationStatus>Success</VerificationStatus>"
                    "</value></entry></VerificationAttributes>"
                    "</GetIdentityVerificationAttributesResult>"
                    "</GetIdentityVerificationAttributesResponse>".encode()),
        monkeypatch=monkeypatch)
    assert client.send_email(Source="a@b.c") == {"MessageId": "m-1"}
    assert "Action=SendEmail" in http.bodies[0] and "Version=2010-12-01" in http.bodies[0]
    assert client.get_identity_verification_attributes(Identities=["b.c"]) == {
        "VerificationAttributes": {"b.c": {"VerificationStatus": "Success"}}}


def test_a_refusal_raises_client_error_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    client, http = ses(Answer(400, error("MessageRejected")), monkeypatch=monkeypatch)
    with pytest.raises(ClientError) as raised:
        client.send_email(Source="a@b.c")
    assert raised.value.response["Error"]["Code"] == "MessageRejected"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert len(http.bodies) == 1


def test_a_throttle_is_tried_three_times(monkeypatch: pytest.MonkeyPatch) -> None:
    client, http = ses(*[Answer(400, error("Throttling"))] * 3, monkeypatch=monkeypatch)
    with pytest.raises(ClientError):
        client.verify_email_identity(EmailAddress="a@b.c")
    assert len(http.bodies) == 3


def test_an_unreadable_5xx_is_retried_and_raised_as_a_client_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    client, http = ses(*[Answer(503, b"<html>busy")] * 3, monkeypatch=monkeypatch)
    with pytest.raises(ClientError) as raised:
        client.send_email(Source="a@b.c")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert len(http.bodies) == 3
