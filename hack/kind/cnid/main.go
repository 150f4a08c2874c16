// Command cnid is a stand-in for kind's kindnetd (whose module the Go module proxy does not
// serve), run by kind's stock CNI manifest on every node of an offline kind cluster:
//
//   - it writes /etc/cni/net.d/10-kindnet.conflist for its own node: ptp (with ipMasq) on
//     host-local IPAM over the node's spec.podCIDR, then portmap (the plugins are Debian's
//     containernetworking-plugins in the node image);
//   - it routes every other node's podCIDR via that node's InternalIP (`ip route replace`).
//
// Its node is the one whose InternalIP is $HOST_IP. It talks to the API server
// ($CONTROL_PLANE_ENDPOINT, set by kind) with the pod's service account (standard library only)
// and re-reads the nodes every few seconds.
// No NetworkPolicy enforcement.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

const (
	serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	confDir           = "/etc/cni/net.d"
	confFile          = "10-kindnet.conflist"
	period            = 5 * time.Second
)

type nodeList struct {
	Items []struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			PodCIDR string `json:"podCIDR"`
		} `json:"spec"`
		Status struct {
			Addresses []struct {
				Type    string `json:"type"`
				Address string `json:"address"`
			} `json:"addresses"`
		} `json:"status"`
	} `json:"items"`
}

type node struct{ name, ip, podCIDR string }

type apiClient struct {
	http  *http.Client
	base  string
	token string
}

// newAPIClient talks to $CONTROL_PLANE_ENDPOINT (host:port, which kind adds to its CNI manifest)
// when set: the service IP works only once kube-proxy has programmed it, and this daemon is what
// lets the pods start. Else to the kubernetes Service, like any pod.
func newAPIClient() (*apiClient, error) {
	endpoint := os.Getenv("CONTROL_PLANE_ENDPOINT")
	if endpoint == "" {
		host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
		if host == "" || port == "" {
			return nil, errors.New("neither CONTROL_PLANE_ENDPOINT nor KUBERNETES_SERVICE_HOST/PORT is set")
		}
		endpoint = net.JoinHostPort(host, port)
	}
	ca, err := os.ReadFile(filepath.Join(serviceAccountDir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("no certificate in the service account's ca.crt")
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return &apiClient{
		http: &http.Client{Transport: transport, Timeout: 20 * time.Second},
		base: "https://" + endpoint,
	}, nil
}

func (c *apiClient) nodes(ctx context.Context) ([]node, error) {
	// The token is re-read every time: the kubelet rotates it.
	token, err := os.ReadFile(filepath.Join(serviceAccountDir, "token"))
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/api/v1/nodes", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+string(bytes.TrimSpace(token)))
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/v1/nodes: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	var list nodeList
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, err
	}
	var out []node
	for _, item := range list.Items {
		n := node{name: item.Metadata.Name, podCIDR: item.Spec.PodCIDR}
		for _, a := range item.Status.Addresses {
			if a.Type == "InternalIP" && net.ParseIP(a.Address).To4() != nil {
				n.ip = a.Address
			}
		}
		out = append(out, n)
	}
	return out, nil
}

func conflist(podCIDR string) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "0.4.0",
		"name":       "kindnet",
		"plugins": []any{
			map[string]any{
				"type":   "ptp",
				"ipMasq": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"dataDir": "/run/cni-ipam-state",
					"routes":  []any{map[string]any{"dst": "0.0.0.0/0"}},
					"ranges":  []any{[]any{map[string]any{"subnet": podCIDR}}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// writeIfChanged writes path atomically (temp file, fsync, rename) when its content differs.
func writeIfChanged(path string, content []byte) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, content) {
		return false, nil
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return false, err
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		return false, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return false, err
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	return true, os.Rename(tmp, path)
}

func reconcile(ctx context.Context, api *apiClient, hostIP string, routes map[string]string) error {
	nodes, err := api.nodes(ctx)
	if err != nil {
		return err
	}
	var self *node
	for i := range nodes {
		if nodes[i].ip == hostIP {
			self = &nodes[i]
		}
	}
	if self == nil {
		return fmt.Errorf("no node has InternalIP %s (yet)", hostIP)
	}
	if self.podCIDR == "" {
		return fmt.Errorf("node %s has no spec.podCIDR (yet)", self.name)
	}
	content, err := conflist(self.podCIDR)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return err
	}
	changed, err := writeIfChanged(filepath.Join(confDir, confFile), content)
	if err != nil {
		return err
	}
	if changed {
		log.Printf("node %s: wrote %s for podCIDR %s", self.name, confFile, self.podCIDR)
	}
	for _, n := range nodes {
		if n.name == self.name || n.podCIDR == "" || n.ip == "" {
			continue
		}
		// Replaced every round (idempotent): a route lost with a restarted node comes back.
		out, err := exec.CommandContext(ctx, "ip", "route", "replace", n.podCIDR, "via", n.ip).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip route replace %s via %s: %v: %s", n.podCIDR, n.ip, err, bytes.TrimSpace(out))
		}
		if routes[n.podCIDR] != n.ip {
			routes[n.podCIDR] = n.ip
			log.Printf("route %s via %s (node %s)", n.podCIDR, n.ip, n.name)
		}
	}
	return nil
}

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	hostIP := os.Getenv("HOST_IP")
	if net.ParseIP(hostIP) == nil {
		log.Fatalf("HOST_IP is not an IP address: %q", hostIP)
	}
	api, err := newAPIClient()
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Printf("cnid: node IP %s, pod subnet %s, API server %s", hostIP, os.Getenv("POD_SUBNET"), api.base)
	routes := map[string]string{}
	lastErr := ""
	for {
		if err := reconcile(ctx, api, hostIP, routes); err != nil && err.Error() != lastErr {
			log.Printf("not yet: %v", err)
			lastErr = err.Error()
		} else if err == nil {
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			log.Print("cnid: stopping")
			return
		case <-time.After(period):
		}
	}
}
