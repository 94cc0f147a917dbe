# Multi-stage build of both services: /usr/local/bin/projector and /usr/local/bin/producer.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/...

FROM debian:12-slim
COPY --from=build /out/projector /out/producer /usr/local/bin/
USER 65532:65532
