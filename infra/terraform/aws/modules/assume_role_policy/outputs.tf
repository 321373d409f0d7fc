output "json" {
  description = "The trust policy, for an aws_iam_role's assume_role_policy."
  value       = data.aws_iam_policy_document.this.json
}
