"""GovernanceService: permission checks, output validation, policies, trust, approvals, budgets,
the decision log and the policy stream."""
