"""A team-mode registry's settings for tests: who is on the team, and their credentials."""

from __future__ import annotations

import base64
from pathlib import Path

from nixery.auth.access import hash_robot_token
from tests.conftest import TEST_PKGS
from tests.tokeninfo_standin import GCLOUD_CLIENT_ID, TokenInfoStandIn, token_answer

ROBOT = "ci-bot"
ROBOT_TOKEN = "robot-token-for-tests-0123456789abcdef"
# Fixed salt: the tests need no randomness; real lines come from `nixery robot-token`.
ROBOT_LINE = hash_robot_token(ROBOT, ROBOT_TOKEN, salt=b"fixed-test-salt!").line()

# token -> (who, what tokeninfo says about it)
TOKENS = {
    "tok-alice": token_answer("alice@example.com"),  # a listed member
    "tok-carol": token_answer("carol@example.org"),  # in a listed domain
    "tok-frank": token_answer("frank@corp.example.org", hosted_domain="example.org"),
    "tok-expired": token_answer("alice@example.com", expires_in=-60),
    "tok-other-client": token_answer("alice@example.com", audience="1234.apps.example"),
    "tok-mallory": token_answer("mallory@example.com"),  # not a member, domain not listed
    "tok-bob": token_answer("bob@example.net"),  # wrong domain
    "tok-unverified": token_answer("dave@example.org", verified=False),
    "tok-hd-elsewhere": token_answer("erin@example.org", hosted_domain="elsewhere.test"),
}


def team_env(standin: TokenInfoStandIn, storage: Path) -> dict[str, str]:
    return {
        "NIXERY_PKGS_PATH": str(TEST_PKGS),
        "STORAGE_PATH": str(storage),
        "NIXERY_ACCESS": "team",
        "NIXERY_TEAM_MEMBERS": "alice@example.com",
        "NIXERY_TEAM_DOMAINS": "example.org",
        "NIXERY_TEAM_AUDIENCES": GCLOUD_CLIENT_ID,
        "NIXERY_ROBOT_TOKENS": ROBOT_LINE,
        "NIXERY_TOKENINFO_URL": standin.url,
    }


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def google(token: str) -> str:
    return basic("oauth2accesstoken", token)
