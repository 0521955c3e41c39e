"""How a route gets this worker's AccountService (`Accounts`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from avatar_chat.accounts.service import AccountService
from avatar_chat.core.dependencies import StateDependency

account_service = StateDependency[AccountService]("accounts")
Accounts = Annotated[AccountService, Depends(account_service)]
