# `terraform test` from infra/terraform/aws (Terraform >= 1.7): plans and applies against a
# mocked AWS provider, so it needs no credentials and creates nothing.

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
  mock_data "aws_ssm_parameter" {
    defaults = { value = "ami-0123456789abcdef0" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000" }
  }
  # Resources whose ARN another resource validates (flow log, RDS monitoring): a random mock
  # string is refused as "an invalid ARN", so give them well-formed ones.
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:us-east-1:123456789012:log-group:mock" }
  }
  mock_resource "aws_launch_template" {
    defaults = { id = "lt-0123456789abcdef0" } # aws_instance checks the lt- prefix
  }
  mock_resource "aws_instance" {
    defaults = {
      private_ip  = "10.42.0.12"
      private_dns = "ip-10-42-0-12.ec2.internal"
    }
  }
  mock_resource "aws_db_instance" {
    defaults = {
      address  = "llmops-services.abc.us-east-1.rds.amazonaws.com"
      username = "llmops"
      master_user_secret = [{
        kms_key_id    = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
        secret_arn    = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds-db-abc"
        secret_status = "active"
      }]
    }
  }
}

variables {
  ssh_ingress_cidr = "10.8.0.0/16"
  training_image   = "123456789012.dkr.ecr.us-east-1.amazonaws.com/llmops-train:0.1.0"
}

run "defaults_give_two_p5_nodes_and_the_launch_outputs" {
  command = apply

  assert {
    condition     = output.node_count == 2 && length(output.node_hostnames) == 2 && length(output.node_private_ips) == 2
    error_message = "two nodes by default, each with a hostname and an IP"
  }
  assert {
    condition     = output.gpus_per_node == 8 && output.efa_interfaces_per_node == 32
    error_message = "p5.48xlarge: 8 GPUs and 32 EFA interfaces per node"
  }
  assert {
    condition     = output.mlflow_tracking_uri == "http://10.42.0.12:5000" && output.prefect_api_url == "http://10.42.0.12:4200/api"
    error_message = "service URLs are the services host's private address"
  }
  assert {
    condition     = output.dvc_bucket == "llmops-dvc-123456789012" && output.checkpoint_dir == ""
    error_message = "bucket names carry the account id; no FSx unless enabled"
  }
  assert {
    condition     = aws_kms_key.this.enable_key_rotation
    error_message = "the project key rotates"
  }
}

run "fsx_adds_the_checkpoint_dir" {
  command = plan
  variables {
    enable_fsx = true
  }
  assert {
    condition     = output.checkpoint_dir == "/fsx/checkpoints"
    error_message = "with FSx the nodes share /fsx/checkpoints"
  }
}

run "ssh_from_the_internet_is_refused" {
  command = plan
  variables {
    ssh_ingress_cidr = "0.0.0.0/0"
  }
  expect_failures = [var.ssh_ingress_cidr]
}

run "non_gpu_instance_type_is_refused" {
  command = plan
  variables {
    instance_type = "m5.large"
  }
  expect_failures = [var.instance_type]
}

run "untagged_image_is_refused" {
  command = plan
  variables {
    training_image = "llmops-train"
  }
  expect_failures = [var.training_image]
}

run "zero_nodes_are_refused" {
  command = plan
  variables {
    node_count = 0
  }
  expect_failures = [var.node_count]
}

# The modules no longer repeat these checks: the root's variables are the one gate.
run "vpc_too_small_for_the_subnets_is_refused" {
  command = plan
  variables {
    vpc_cidr = "10.42.0.0/24"
  }
  expect_failures = [var.vpc_cidr]
}

run "one_availability_zone_is_refused" {
  command = plan
  variables {
    availability_zones = ["us-east-1a"]
  }
  expect_failures = [var.availability_zones]
}
