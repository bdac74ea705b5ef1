// SPDX-License-Identifier: Apache-2.0

package wrapper

import (
	"encoding/json"
	"os"
	"strconv"
	"time"
)

// LogLine is one line in the format runc writes to its --log file, so that
// containerd's shim, which reads the last "error" line of that file to say
// why runc failed, reports the wrapper's errors the same way as runc's own.
// runc logs through logrus: --log-format json gives logrus's JSON formatter
// (keys in this order), anything else its text formatter.
func LogLine(format, level, msg string, now time.Time) []byte {
	stamp := now.Format(time.RFC3339Nano)
	if format == "json" {
		line, _ := json.Marshal(struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Time  string `json:"time"`
		}{level, msg, stamp}) // strings only: cannot fail
		return append(line, '\n')
	}
	return []byte("time=" + strconv.Quote(stamp) + " level=" + level + " msg=" + strconv.Quote(msg) + "\n")
}

// appendLog adds one line to runc's --log file, creating it as runc would.
func appendLog(path string, line []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(line)
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	return err
}
