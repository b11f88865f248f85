# ebb's image: nothing but the ebb binary and what it needs to run. No base image is pulled, no
# shell, no package manager, nothing executed at build time. `scripts/image` stages `rootfs/`
# next to this file (the release binary, the shared libraries it links and their loader, Debian's
# CA bundle, a passwd entry for UID 65532, an empty /tmp) and builds it with buildah:
#
#   scripts/image                 # target/image/oci, an OCI image layout tagged with the version
#
# Read-only-root friendly: ebb writes nothing outside the directories its flags name, and
# relative defaults (.ebb/…) resolve under /tmp, where the manifests mount an emptyDir.
FROM scratch
COPY rootfs/ /
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
WORKDIR /tmp
USER 65532:65532
EXPOSE 6443 8080 9443
ENTRYPOINT ["/ebb"]
CMD ["--help"]
