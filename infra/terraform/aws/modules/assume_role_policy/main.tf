# The trust policy of a role that one AWS service assumes (EC2 instance profiles, VPC flow logs,
# RDS enhanced monitoring). Every role of the project trusts exactly one service principal and
# nothing else, so this one document is written once and called per role.

data "aws_iam_policy_document" "this" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = [var.service]
    }
  }
}
