# Root example: a GPU cluster for the `cluster` profile of params.yaml.
#   network -> storage -> services (MLflow, Prefect on RDS) -> gpu_nodes
# `terraform output -json > out.json` is what `llmops launch render --from-terraform` reads.

data "aws_caller_identity" "current" {}

# One customer-managed key for everything at rest: buckets, volumes, database, logs.
resource "aws_kms_key" "this" {
  description         = "${var.name}: buckets, volumes, database, logs"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

data "aws_iam_policy_document" "kms" {
  # checkov:skip=CKV_AWS_109: a key policy's Resource "*" is this key alone; the account root must administer it or the key becomes unmanageable
  # checkov:skip=CKV_AWS_111: same: write access is to this key only, granted to this account
  # checkov:skip=CKV_AWS_356: same: "*" in a key policy cannot name any other resource
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"] # in a key policy "*" means this key
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    sid       = "CloudWatchLogsEncrypt"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"] # in a key policy "*" means this key
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:aws:logs:${var.region}:${data.aws_caller_identity.current.account_id}:*"]
    }
  }
}

module "network" {
  source             = "./modules/network"
  name               = var.name
  vpc_cidr           = var.vpc_cidr
  availability_zones = var.availability_zones
  ssh_ingress_cidr   = var.ssh_ingress_cidr
  enable_nat_gateway = var.enable_nat_gateway
  kms_key_arn        = aws_kms_key.this.arn
}

module "storage" {
  source                   = "./modules/storage"
  name                     = var.name
  kms_key_arn              = aws_kms_key.this.arn
  force_destroy            = var.force_destroy_buckets
  enable_fsx               = var.enable_fsx
  fsx_storage_capacity_gib = var.fsx_storage_capacity_gib
  vpc_id                   = module.network.vpc_id
  subnet_id                = module.network.private_subnet_ids[0]
  client_security_group_id = module.network.cluster_security_group_id
}

module "services" {
  source              = "./modules/services"
  name                = var.name
  vpc_id              = module.network.vpc_id
  vpc_cidr            = module.network.vpc_cidr
  subnet_ids          = module.network.private_subnet_ids
  kms_key_arn         = aws_kms_key.this.arn
  mlflow_bucket       = module.storage.mlflow_bucket
  mlflow_bucket_arn   = "arn:aws:s3:::${module.storage.mlflow_bucket}"
  instance_type       = var.services_instance_type
  db_instance_class   = var.db_instance_class
  db_multi_az         = var.db_multi_az
  deletion_protection = var.deletion_protection
}

module "gpu_nodes" {
  source                    = "./modules/gpu_nodes"
  name                      = var.name
  node_count                = var.node_count
  instance_type             = var.instance_type
  ami_id                    = var.ami_id
  root_volume_gib           = var.root_volume_gib
  subnet_id                 = module.network.private_subnet_ids[0]
  security_group_id         = module.network.cluster_security_group_id
  kms_key_arn               = aws_kms_key.this.arn
  bucket_arns               = module.storage.bucket_arns
  training_image            = var.training_image
  cluster_ssh_key_parameter = var.cluster_ssh_key_parameter
  mlflow_tracking_uri       = module.services.mlflow_tracking_uri
  prefect_api_url           = module.services.prefect_api_url
  work_pool                 = var.work_pool
  fsx_dns_name              = module.storage.fsx_dns_name
  fsx_mount_name            = module.storage.fsx_mount_name
}
