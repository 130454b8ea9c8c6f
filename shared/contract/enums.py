"""The closed vocabularies of the contract; values are the wire names."""

from enum import StrEnum


class InboundKind(StrEnum):
    """What a unit's system reports on `intake.<unit>.<kind>`."""

    lead = "lead"
    document = "document"
    milestone = "milestone"
    funds = "funds"
    visit = "visit"
    decision = "decision"
    meeting = "meeting"  # from the Center only
    rates = "rates"  # from the Center only
    correction = "correction"  # 更正: amends a lead, milestone or funds record
    withdrawal = "withdrawal"  # 撤回: a record entered by mistake
    claim = "claim"  # from the Center only: resolves a held duplicate claim (认定归属)


# The committee's office (the Center) records meetings and their collective decisions
# (集体决策); a unit cannot approve its own project or name its sponsor.
CENTER_ONLY_KINDS = frozenset(
    {InboundKind.meeting, InboundKind.rates, InboundKind.decision, InboundKind.claim}
)
PROJECT_KINDS_WITHOUT_PROJECT = frozenset({InboundKind.meeting, InboundKind.rates})


class ProjectKind(StrEnum):
    industrial = "industrial"  # 工业
    headquarters = "headquarters"  # 总部经济
    modern_services = "modern_services"  # 现代服务业
    expansion = "expansion"  # 园区原有企业改扩建
    real_estate = "real_estate"  # 房地产
    urban_complex = "urban_complex"  # 城市综合体
    financial_institution = "financial_institution"  # 金融类机构
    other = "other"


class Land(StrEnum):
    new_land = "new_land"  # 新增用地
    existing_land = "existing_land"  # 非新增用地
    none = "none"


class Origin(StrEnum):
    foreign = "foreign"
    outside_province = "outside_province"
    outside_city = "outside_city"
    inside_city = "inside_city"
    inside_county = "inside_county"


class DocumentType(StrEnum):
    # 评审会材料 committee materials
    basic_info_form = "basic_info_form"
    feasibility_report = "feasibility_report"
    aerial_view = "aerial_view"
    investment_contract = "investment_contract"
    # 落地证明材料 recognition proofs
    investment_proof = "investment_proof"
    signed_contract = "signed_contract"
    filing_approval = "filing_approval"
    business_license = "business_license"
    funds_voucher = "funds_voucher"
    progress_images = "progress_images"
    land_use_certificate = "land_use_certificate"
    premises_agreement = "premises_agreement"
    financial_license = "financial_license"


class MilestoneKind(StrEnum):
    signed = "signed"  # 签约
    filed = "filed"
    registered = "registered"
    land_assigned = "land_assigned"
    waiting_for_land = "waiting_for_land"
    lacking_funds = "lacking_funds"
    started = "started"  # 开工
    completed = "completed"  # 竣工投产


class FundsForm(StrEnum):
    cash = "cash"
    tangible = "tangible"
    intangible = "intangible"


class VoucherKind(StrEnum):
    bank_receipt = "bank_receipt"
    equipment_invoice = "equipment_invoice"
    valuation_report = "valuation_report"
    capital_verification_report = "capital_verification_report"


class Decision(StrEnum):
    approved = "approved"
    rejected = "rejected"


class Outcome(StrEnum):
    accepted = "accepted"
    terminated = "terminated"


class Track(StrEnum):
    major = "major"
    standard = "standard"


class RecordKind(StrEnum):
    """What a correction (更正) or withdrawal (撤回) targets."""

    lead = "lead"
    milestone = "milestone"
    funds = "funds"


class ClaimResolution(StrEnum):
    """How the Center resolves a held duplicate claim (一个项目一个认领)."""

    assign = "assign"  # one project: `assign_to` names the claim that stands
    distinct = "distinct"  # two projects after all: the held one goes ahead too
