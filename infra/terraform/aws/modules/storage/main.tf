# Object storage for the DVC remote and MLflow artifacts, plus an optional Lustre file system
# for checkpoints. Every bucket: versioned, KMS-encrypted, public access blocked, TLS only,
# access-logged.

data "aws_caller_identity" "current" {}

locals {
  # purpose => bucket name; the account id keeps global bucket names unique per account.
  buckets = {
    dvc    = "${var.name}-dvc-${data.aws_caller_identity.current.account_id}"
    mlflow = "${var.name}-mlflow-${data.aws_caller_identity.current.account_id}"
  }
  log_bucket = "${var.name}-access-logs-${data.aws_caller_identity.current.account_id}"
  # Lustre's port ranges (988, 1018-1023), keyed by first port: both ingress rules open these.
  lustre_ports = var.enable_fsx ? { "988" = { from = 988, to = 988 }, "1018" = { from = 1018, to = 1023 } } : {}
}

module "dvc" {
  source                  = "./bucket"
  bucket                  = local.buckets.dvc
  log_bucket              = aws_s3_bucket.logs.id
  kms_key_arn             = var.kms_key_arn
  noncurrent_version_days = var.noncurrent_version_days
  force_destroy           = var.force_destroy
}

module "mlflow" {
  source                  = "./bucket"
  bucket                  = local.buckets.mlflow
  log_bucket              = aws_s3_bucket.logs.id
  kms_key_arn             = var.kms_key_arn
  noncurrent_version_days = var.noncurrent_version_days
  force_destroy           = var.force_destroy
}

resource "aws_s3_bucket" "logs" {
  # checkov:skip=CKV_AWS_144: access logs are kept in-region with the buckets they describe
  # checkov:skip=CKV2_AWS_62: nothing consumes object events of the access logs
  # checkov:skip=CKV_AWS_18: this is the access-log bucket; logging it into itself would loop
  # checkov:skip=CKV_AWS_145: S3 server access logging only delivers to SSE-S3 (AES256) buckets, not SSE-KMS
  bucket        = local.log_bucket
  force_destroy = var.force_destroy
}

# The access-log bucket: the same settings as ./bucket, without logging (see its skips).
resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256" # S3 access logging cannot deliver to an SSE-KMS bucket
    }
  }
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    id     = "expire-old-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = 365
    }
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

data "aws_iam_policy_document" "logs" {
  statement {
    sid       = "S3ServerAccessLogsDelivery"
    actions   = ["s3:PutObject"]
    resources = ["arn:aws:s3:::${local.log_bucket}/*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
  statement {
    sid     = "DenyPlainHTTP"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      "arn:aws:s3:::${local.log_bucket}",
      "arn:aws:s3:::${local.log_bucket}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  bucket = aws_s3_bucket.logs.id
  policy = data.aws_iam_policy_document.logs.json
  # A bucket policy cannot be set while the public access block is still being created.
  depends_on = [aws_s3_bucket_public_access_block.logs]
}

# Checkpoints: ZeRO-3 writes one shard per rank at once; Lustre takes that burst better than S3
# and every node mounts the same path, so a restart on any node finds the latest step.
resource "aws_security_group" "fsx" {
  count       = var.enable_fsx ? 1 : 0
  name        = "${var.name}-fsx"
  description = "FSx for Lustre: Lustre ports from the GPU nodes only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "fsx_lustre" {
  for_each                     = local.lustre_ports
  security_group_id            = aws_security_group.fsx[0].id
  description                  = "Lustre from the GPU nodes"
  ip_protocol                  = "tcp"
  from_port                    = each.value.from
  to_port                      = each.value.to
  referenced_security_group_id = var.client_security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "fsx_self" {
  for_each                     = local.lustre_ports
  security_group_id            = aws_security_group.fsx[0].id
  description                  = "Lustre between the file system's own servers"
  ip_protocol                  = "tcp"
  from_port                    = each.value.from
  to_port                      = each.value.to
  referenced_security_group_id = aws_security_group.fsx[0].id
}

resource "aws_vpc_security_group_egress_rule" "fsx_self" {
  count                        = var.enable_fsx ? 1 : 0
  security_group_id            = aws_security_group.fsx[0].id
  description                  = "Lustre replies to its servers and clients"
  ip_protocol                  = "tcp"
  from_port                    = 988
  to_port                      = 1023
  referenced_security_group_id = var.client_security_group_id
}

resource "aws_fsx_lustre_file_system" "checkpoints" {
  count                       = var.enable_fsx ? 1 : 0
  storage_capacity            = var.fsx_storage_capacity_gib
  deployment_type             = "PERSISTENT_2"
  per_unit_storage_throughput = var.fsx_throughput_per_tib
  subnet_ids                  = [var.subnet_id]
  security_group_ids          = [aws_security_group.fsx[0].id]
  kms_key_id                  = var.kms_key_arn
  copy_tags_to_backups        = true
  tags                        = { Name = "${var.name}-checkpoints" }
}
