"""Off-policy evaluation, diagnostics and the policy-approval report."""
