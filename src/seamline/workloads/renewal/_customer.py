"""One customer of the Telco churn data, as the renewal agent sees it."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import pydantic

__all__ = ["CONTRACTS", "Contract", "Customer"]

Contract = Literal["Month-to-month", "One year", "Two year"]
CONTRACTS: tuple[Contract, ...] = ("Month-to-month", "One year", "Two year")
YesNo = Literal["Yes", "No"]


class Customer(pydantic.BaseModel):
    """The 21 columns of the IBM Telco customer churn file, validated and typed.

    ``total_charges`` is None only where a declared repair rule could not supply it;
    ``churn`` is the historical label, used by the simulation of customer responses only.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    customer_id: str = pydantic.Field(pattern=r"^\d{4}-[A-Z]{5}$")
    gender: Literal["Male", "Female"]
    senior_citizen: bool
    partner: bool
    dependents: bool
    tenure: int = pydantic.Field(ge=0, le=120)
    phone_service: bool
    multiple_lines: Literal["Yes", "No", "No phone service"]
    internet_service: Literal["DSL", "Fiber optic", "No"]
    online_security: Literal["Yes", "No", "No internet service"]
    online_backup: Literal["Yes", "No", "No internet service"]
    device_protection: Literal["Yes", "No", "No internet service"]
    tech_support: Literal["Yes", "No", "No internet service"]
    streaming_tv: Literal["Yes", "No", "No internet service"]
    streaming_movies: Literal["Yes", "No", "No internet service"]
    contract: Contract
    paperless_billing: bool
    payment_method: Literal[
        "Electronic check",
        "Mailed check",
        "Bank transfer (automatic)",
        "Credit card (automatic)",
    ]
    monthly_charges: Decimal = pydantic.Field(ge=0, le=1000, decimal_places=2)
    total_charges: Decimal | None = pydantic.Field(default=None, ge=0)
    churn: bool
