# vagrant/tsig.rb: the TSIG key (RFC 8945) app VMs sign their RFC 2136
# updates with, made on the host the first time the Vagrantfile loads:
# `key "vagrant" { algorithm hmac-sha256; secret "…"; };` as BIND's
# tsig-keygen prints it (nsupdate -k reads it, gatehouse reads it), 256
# random bits, mode 0600 in a 0700 folder. Never overwritten: the gateway
# and every app VM must hold the same one. Owns making the file; must not
# print or log the secret.
require "fileutils"
require "securerandom"

module Gatehouse
  module Tsig
    NAME = "vagrant"

    # The key file at `path`, made if missing; returns `path`.
    def self.ensure_key(path)
      return path if File.exist?(path)
      FileUtils.mkdir_p(File.dirname(path), mode: 0o700)
      clause = %(key "#{NAME}" {\n\talgorithm hmac-sha256;\n\tsecret "#{SecureRandom.base64(32)}";\n};\n)
      tmp = "#{path}.tmp.#{Process.pid}"
      File.open(tmp, File::WRONLY | File::CREAT | File::EXCL, 0o600) { |f| f.write(clause) }
      File.rename(tmp, path)
      path
    end
  end
end
