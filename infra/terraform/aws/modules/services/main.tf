# MLflow tracking server and Prefect server on one private host, both backed by one RDS
# PostgreSQL instance (databases `mlflow` and `prefect`). Reachable only from inside the VPC.

data "aws_ssm_parameter" "al2023" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

data "aws_region" "current" {}

resource "aws_security_group" "services" {
  name        = "${var.name}-services"
  description = "MLflow and Prefect servers: from inside the VPC only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "services" {
  for_each          = { mlflow = 5000, prefect = 4200 }
  security_group_id = aws_security_group.services.id
  description       = "${each.key} from inside the VPC"
  ip_protocol       = "tcp"
  from_port         = each.value
  to_port           = each.value
  cidr_ipv4         = var.vpc_cidr
}

resource "aws_vpc_security_group_egress_rule" "services_https" {
  security_group_id = aws_security_group.services.id
  description       = "HTTPS out: package index, S3, Secrets Manager"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "services_db" {
  security_group_id            = aws_security_group.services.id
  description                  = "PostgreSQL"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.db.id
}

resource "aws_security_group" "db" {
  name        = "${var.name}-db"
  description = "RDS PostgreSQL: from the services host only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "db" {
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from the services host"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.services.id
}

resource "aws_db_subnet_group" "this" {
  name       = "${var.name}-db"
  subnet_ids = var.subnet_ids
}

resource "aws_db_parameter_group" "this" {
  name   = "${var.name}-postgres16"
  family = "postgres16"
  parameter {
    name  = "rds.force_ssl" # encryption in transit for every client
    value = "1"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000" # slow queries (ms): a growing run table shows up here first
  }
}

resource "aws_db_instance" "this" {
  identifier                            = "${var.name}-services"
  engine                                = "postgres"
  engine_version                        = "16"
  instance_class                        = var.db_instance_class
  allocated_storage                     = var.db_allocated_storage_gib
  max_allocated_storage                 = var.db_allocated_storage_gib * 10
  storage_encrypted                     = true
  kms_key_id                            = var.kms_key_arn
  db_name                               = "mlflow"
  username                              = "llmops"
  manage_master_user_password           = true # RDS keeps (and rotates) it in Secrets Manager
  master_user_secret_kms_key_id         = var.kms_key_arn
  iam_database_authentication_enabled   = true
  db_subnet_group_name                  = aws_db_subnet_group.this.name
  parameter_group_name                  = aws_db_parameter_group.this.name
  vpc_security_group_ids                = [aws_security_group.db.id]
  publicly_accessible                   = false
  multi_az                              = var.db_multi_az
  backup_retention_period               = var.db_backup_retention_days
  deletion_protection                   = var.deletion_protection
  skip_final_snapshot                   = false
  final_snapshot_identifier             = "${var.name}-services-final"
  copy_tags_to_snapshot                 = true
  auto_minor_version_upgrade            = true
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = var.kms_key_arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
}

module "assume_rds_monitoring" {
  source  = "../assume_role_policy"
  service = "monitoring.rds.amazonaws.com"
}

resource "aws_iam_role" "rds_monitoring" {
  name               = "${var.name}-rds-monitoring"
  assume_role_policy = module.assume_rds_monitoring.json
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

# The services host: MLflow (artifacts go straight from clients to S3, the server only keeps
# the metadata) and Prefect (API + UI), each a systemd unit.
resource "aws_instance" "services" {
  ami                    = data.aws_ssm_parameter.al2023.value
  instance_type          = var.instance_type
  subnet_id              = var.subnet_ids[0]
  vpc_security_group_ids = [aws_security_group.services.id]
  iam_instance_profile   = aws_iam_instance_profile.services.name
  ebs_optimized          = true
  monitoring             = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_size = 30
    volume_type = "gp3"
    encrypted   = true
    kms_key_id  = var.kms_key_arn
  }

  user_data_base64 = base64encode(templatefile("${path.module}/services_user_data.sh.tftpl", {
    region          = data.aws_region.current.name
    db_host         = aws_db_instance.this.address
    db_user         = aws_db_instance.this.username
    db_secret_arn   = aws_db_instance.this.master_user_secret[0].secret_arn
    mlflow_bucket   = var.mlflow_bucket
    mlflow_version  = var.mlflow_version
    prefect_version = var.prefect_version
  }))

  tags = { Name = "${var.name}-services" }
}

module "assume_ec2" {
  source  = "../assume_role_policy"
  service = "ec2.amazonaws.com"
}

data "aws_iam_policy_document" "services" {
  statement {
    sid       = "ListArtifactBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [var.mlflow_bucket_arn]
  }
  statement {
    sid       = "ReadWriteArtifacts" # the UI shows artifacts, runs deleted in the UI remove them
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${var.mlflow_bucket_arn}/*"]
  }
  statement {
    sid       = "ReadDatabaseSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_db_instance.this.master_user_secret[0].secret_arn]
  }
  statement {
    sid       = "UseProjectKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role" "services" {
  name               = "${var.name}-services"
  assume_role_policy = module.assume_ec2.json
}

resource "aws_iam_role_policy" "services" {
  name   = "artifacts-and-db-secret-only"
  role   = aws_iam_role.services.id
  policy = data.aws_iam_policy_document.services.json
}

resource "aws_iam_instance_profile" "services" {
  name = "${var.name}-services"
  role = aws_iam_role.services.name
}
